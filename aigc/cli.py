"""`aigc`: the command line of aigc-pipeline.

Thin: settings, progress and output; flows do the work.

Everything the CLI prints for people goes to stderr (progress, errors); stdout carries the
summary table, or with --json exactly one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aigc import embedded
from aigc_core import names
from aigc_core.paths import Home

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Data -> generative models -> curated content, orchestrated by Prefect.",
)
err = Console(stderr=True)
out = Console()


def _settings(home: Home, verbose: bool) -> None:
    """Embedded-mode settings, applied before Prefect or MLflow are imported. Values the user
    has already set (e.g. PREFECT_API_URL for served mode) win."""
    os.environ["AIGC_HOME"] = str(home.root)
    defaults = {
        "PREFECT_HOME": str(home.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO" if verbose else "CRITICAL",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_LOGGING_LEVEL": "INFO" if verbose else "WARNING",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    from aigc.console_log import show_warnings

    # without -v, library logs stay hidden (Prefect's root console handler is at CRITICAL) and
    # the project's own warnings reach stderr through their own handler, one line each
    show_warnings(not verbose)
    if verbose:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    else:
        warnings.filterwarnings("ignore")


class _RichReporter:
    """Feeds aigc_core.progress reports into one Rich progress display."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, completed: int, total: int | None) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=completed, total=total)


def open_home(home: Path | None, verbose: bool) -> Home:
    """Resolve and create the home, then apply the settings; a bad home is a usage error."""
    h = Home.resolve(home)
    try:
        h.ensure()
    except OSError as e:
        raise _fail(f"cannot use {h.root} as the aigc home: {e}", 2) from None
    _settings(h, verbose)
    return h


def start_prefect(home: Home) -> None:
    """Start the embedded Prefect server (served mode: nothing), before the heavy imports."""
    try:
        embedded.start(home)
    except embedded.EmbeddedServerError as e:
        raise _fail(str(e)) from None


def wait_for_prefect() -> None:
    try:
        embedded.wait()
    except embedded.EmbeddedServerError as e:
        raise _fail(str(e)) from None


@contextlib.contextmanager
def progress_bars(transient: bool = False) -> Iterator[None]:
    """One Rich progress display on stderr fed by aigc_core.progress reports."""
    from aigc_core import progress as core_progress

    columns = [
        TextColumn("{task.description:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err, transient=transient) as bar:
        core_progress.set_reporter(_RichReporter(bar))
        try:
            yield
        finally:
            core_progress.set_reporter(None)


@app.callback()
def main() -> None:
    """aigc-pipeline: data -> generative models -> curated content."""


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _name(check, value):
    """`check(value)`, one of `aigc_core.names`' checks: a user-given name in its stored form.
    A name that breaks its rule is a usage error (exit 2), before anything starts."""
    try:
        return check(value)
    except names.InvalidName as e:
        raise _fail(str(e), 2) from None


@app.command()
def run(
    preset: str = typer.Option(
        "cpu",
        help="Training preset: smoke (seconds), cpu (minutes), gpu; for dcgan also seed "
        "(the seed's full recipe, for a GPU).",
    ),
    family: str = typer.Option(
        "dcgan", "--model", help="Model family: dcgan or vae (images), charlstm or transformer."
    ),
    dataset: str = typer.Option(
        None,
        help="Dataset name: built-in (default digits for image models, python-docs for text "
        "models), or the name for --path.",
    ),
    path: Path = typer.Option(
        None, help="Files of a user dataset (IDX, image folder, or text files for text models)."
    ),
    init_from: str = typer.Option(
        None, help="Warm start, e.g. models:/aigc-dcgan-digits@champion (nightly fine-tuning)."
    ),
    n: int = typer.Option(256, "--n", min=1, help="Items to generate from the champion."),
    seed: int = typer.Option(0, help="Seed of the content batch."),
    min_confidence: float = typer.Option(
        0.9,
        min=0.0,
        max=1.0,
        help="Curation: keep images the evaluator recognizes with at least this confidence.",
    ),
    home: Path = typer.Option(
        None, envvar="AIGC_HOME", help="Where snapshots, MLflow and content go (default ./.aigc)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """Run the nightly pipeline once, embedded: ingest, validate, train, evaluate, register,
    promote, generate and curate. SIGTERM or Ctrl-C: exit 75, after a checkpoint when training
    had begun (a rerun resumes it), otherwise with the stages done so far kept."""
    from aigc_core.training import interrupt  # the standard library only: cheap

    # first thing: a signal at any moment after this ends the command with exit 75; the stages
    # around training are safe to cut anywhere (abort at once), training checkpoints first
    with interrupt.stop_on_signals():
        try:
            with interrupt.abort_on_signals():
                summary = _nightly(
                    preset, family, dataset, path, init_from, n, seed, min_confidence, home, verbose
                )
        except interrupt.StopRequested as e:
            raise _fail(f"{e}\nRerun `aigc run` to go on.", interrupt.EXIT_INTERRUPTED) from None

    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    table = Table(title="aigc run", show_header=False)
    image = summary["batch_kind"] == "image"
    quality = ("fid", "fid_floor", "evaluator_accuracy") if image else ("bits_per_char",)
    for k in (
        "snapshot_id",
        "run_id",
        "model_name",
        "model_version",
        "promoted",
        "promotion_reason",
        "champion_version",
        *quality,
        "batch_id",
        "batch_dir",
        "n_generated",
        "n_kept",
        "device",
    ):
        v = summary[k]
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    out.print(table)
    batch = Path(summary["batch_dir"])
    if image:
        out.print(f"contact sheet: {batch / 'contact_sheet.png'}")
    out.print(f"review report: {batch / 'report.html'}")


DEFAULT_DATASET = {"image": "digits", "text": "python-docs"}  # by the family's kind


def _nightly(preset, family, dataset, path, init_from, n, seed, min_confidence, home, verbose):
    """`aigc run`'s work: check the input, start Prefect, run the nightly flow; its summary."""
    h = open_home(home, verbose)
    from aigc_core import families
    from aigc_core.training import interrupt

    try:
        fam = families.get(family)
        fam.preset(preset)
        dataset = names.dataset(DEFAULT_DATASET[fam.kind] if dataset is None else dataset)
    except ValueError as e:
        raise _fail(str(e), 2) from None

    start_prefect(h)
    with err.status(embedded.starting_message(), spinner="dots"):
        from aigc_core.training.loop import Interrupted
        from data_contracts import ContractViolation
        from flows.nightly import nightly_retrain

        wait_for_prefect()

    try:
        with progress_bars():
            return nightly_retrain(
                dataset=dataset,
                preset=preset,
                family=family,
                path=str(path) if path else None,
                init_from=init_from,
                n_generate=n,
                seed=seed,
                min_confidence=min_confidence,
                home=str(h.root),
            )
    except ContractViolation as e:
        raise _fail(f"validate: {e}\nNothing was trained or registered.") from None
    except Interrupted as e:  # a signal during training: its checkpoint is written
        raise _fail(
            f"{e}\nRerun `aigc run`: training resumes from that checkpoint.",
            interrupt.EXIT_INTERRUPTED,
        ) from None
    except Exception as e:  # the CLI owns the console: one clear line, details with -v
        if verbose:
            err.print_exception()
        raise _fail(f"{type(e).__name__}: {e}") from None


# Command groups live in their own modules and register on `app` when imported.
from aigc import (  # noqa: E402, F401
    data_commands,
    family_commands,
    generate_commands,
    ops_commands,
    registry_commands,
    train_commands,
)
