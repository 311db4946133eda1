"""`aigc train`: train one model family on a snapshot.

Runs the train task's body in this process (no Prefect server to start, and SIGTERM reaches the
trainer): it tracks the run in MLflow, writes checkpoints under the run's folder and the model
beside them. Exit codes (`aigc.exit_codes`): 0 done; 2 bad input (checked before MLflow is
imported: family and preset, snapshot, warm start, settings); 75 stopped by SIGTERM or SIGINT
(Ctrl-C), after writing a checkpoint or, during start-up, before writing anything (rerun with
--resume auto, which starts afresh when there is nothing to resume); 3 non-finite loss (the last
good checkpoint is kept); 1 other errors. The signal handler goes in before anything slow is
imported, so a signal at any moment of start-up is not lost.

Settings: the preset's, then a --config file, then --set items, then --steps (a shorthand for
`--set train.steps=N`), all checked against the family (`aigc_core.settings`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import typer
from rich.table import Table

from aigc import completion, exit_codes, preflight
from aigc.cli import (
    CONFIG_OPTION_HELP,
    MODEL_FAMILY_HELP,
    SET_OPTION_HELP,
    _crashed,
    _fail,
    _name,
    app,
    err,
    open_home,
    out,
    progress_bars,
    usage_errors,
)
from aigc_core import names
from aigc_core.paths import Home
from aigc_core.training import interrupt  # the standard library only: cheap to import here


@app.command()
def train(
    snapshot: str = typer.Option(..., help="Snapshot id to train on (see `aigc datasets`)."),
    model: str = typer.Option("dcgan", help=MODEL_FAMILY_HELP, autocompletion=completion.families),
    preset: str = typer.Option(
        "cpu",
        help="smoke (seconds), cpu (minutes), gpu (needs CUDA).",
        autocompletion=completion.presets,
    ),
    resume: Literal["auto", "never"] = typer.Option(
        "never",
        help="auto: continue the unfinished run of this snapshot, family, preset and settings "
        "from its latest valid checkpoint; never: refuse if there is one.",
    ),
    init_from: str = typer.Option(
        None, help="Warm start from a model: models:/NAME@champion, runs:/..., or a folder."
    ),
    device: str = typer.Option("auto", help="auto (cuda, then mps, then cpu), or e.g. cpu."),
    config: Path = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    sets: list[str] = typer.Option(None, "--set", help=SET_OPTION_HELP),
    steps: int = typer.Option(
        None, min=1, help="The number of steps: a shorthand for --set train.steps=N."
    ),
    home: Path = typer.Option(
        None, envvar="AIGC_HOME", help="Where snapshots, MLflow and runs go [default: ./.aigc]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """Train a model on a snapshot; checkpoints, resume, warm start, metrics in MLflow."""
    # first thing, before the slow imports: from here on a SIGTERM or Ctrl-C ends the command
    # with exit 75, at once during start-up (nothing is written before the task runs), after a
    # checkpoint once training has begun
    with interrupt.stop_on_signals():
        try:
            with interrupt.abort_on_signals():
                h, snapshot, overrides, train_run = _start(
                    snapshot, model, preset, init_from, config, sets or [], steps, home, verbose
                )
        except interrupt.StopRequested:
            raise _fail(
                "stopped before training started; nothing was written\n"
                "Rerun with --resume auto to continue.",
                exit_codes.INTERRUPTED,
            ) from None
        result = _run(
            train_run, snapshot, model, preset, h, device, resume, init_from, overrides, verbose
        )
    _show(result, as_json)


def _start(snapshot, model, preset, init_from, config, sets, steps, home, verbose):
    """Check the input, the fast checks first, and import the service: home, snapshot, the
    settings overrides, and `tasks.training.train_run`."""
    snapshot = _name(names.snapshot_id, snapshot)
    with usage_errors():
        preflight.family_choice(model, preset)
        preflight.snapshot(Home.resolve(home), snapshot)
        preflight.init_from(Home.resolve(home), init_from)
        overrides = preflight.overrides(config, sets, steps)
        preflight.resolved(model, preset, overrides)  # an error fast; else loads the family
    h = open_home(home, verbose)
    from aigc_core.data.snapshot import SnapshotError, find_snapshot

    try:
        snap = find_snapshot(h.datasets, snapshot).ref()
    except SnapshotError as e:
        raise _fail(str(e), exit_codes.USAGE) from None

    with err.status("starting MLflow...", spinner="dots"):
        from tasks.training import train_run
    return h, snap, overrides or None, train_run


def _run(train_run, snapshot, model, preset, h, device, resume, init_from, overrides, verbose):
    """Train; the run's fields as printed (see `_show`)."""
    from aigc_core.data.snapshot import SnapshotError
    from aigc_core.training.checkpoint import CheckpointError
    from aigc_core.training.loop import Interrupted, NonFiniteLoss

    try:
        with progress_bars():
            trained = train_run(
                snapshot,
                preset,
                str(h.root),
                family=model,
                device=device,
                resume=resume,
                init_from=init_from,
                config=overrides,
            )
        return _fields(trained)
    except Interrupted as e:
        raise _fail(f"{e}\nRerun with --resume auto to continue.", exit_codes.INTERRUPTED) from None
    except NonFiniteLoss as e:
        raise _fail(str(e), exit_codes.NONFINITE) from None
    except (SnapshotError, CheckpointError, ValueError) as e:
        if verbose:
            err.print_exception()
        raise _fail(str(e), exit_codes.USAGE) from None
    except Exception as e:
        raise _crashed(e, verbose) from None


def _fields(trained) -> dict:
    """A trained run as flat fields, as printed: its snapshot's id, a warm start's lineage (if
    any) and the family's final metrics beside the others."""
    fields = dataclasses.asdict(trained)
    del fields["snapshot"]
    final = fields.pop("final")
    for k in ("parent_model_uri", "parent_version"):
        if fields[k] is None:
            del fields[k]
    return {"run_id": fields.pop("run_id"), "snapshot_id": trained.snapshot.id, **fields, **final}


def _show(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    table = Table(title="aigc train", show_header=False)
    for k, v in result.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    out.print(table)
