"""`aigc`: the command line of aigc-pipeline.

Thin: settings, progress and output; flows do the work.

Everything the CLI prints for people goes to stderr (progress, errors); stdout carries the
summary table, or with --json exactly one JSON object. Exit codes: one table for every command
(`aigc.exit_codes`, README "Exit codes"). Arguments are checked before anything slow starts
(`aigc.preflight`): a mistyped call starts no Prefect server and leaves no flow run behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aigc import completion, embedded, exit_codes, preflight, registry_lookup
from aigc_core import names, provenance
from aigc_core.paths import Home
from aigc_core.training import interrupt  # the standard library only: cheap

err = Console(stderr=True)
out = Console()


class _App(typer.Typer):
    """Typer's app, where a stop by SIGTERM or SIGINT (Ctrl-C) ends any command with exit 75 and
    one line (Typer alone exits 130 on Ctrl-C, and SIGTERM kills the process without a word).
    `run` and `train` handle the signals themselves, with their own advice."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except interrupt.StopRequested as e:
            err.print(
                f"[bold red]error:[/] {escape(str(e))} before the command was done; rerun it "
                f"to go on",
                highlight=False,
            )
            sys.exit(exit_codes.INTERRUPTED)


app = _App(
    no_args_is_help=True,
    help="Data -> generative models -> curated content, orchestrated by Prefect.",
)


def _settings(home: Home, verbose: bool) -> None:
    """Embedded-mode settings, applied before Prefect or MLflow are imported. Values the user
    has already set (e.g. PREFECT_API_URL for served mode) win."""
    os.environ["AIGC_HOME"] = str(home.root)
    defaults = {
        "PREFECT_HOME": str(home.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO" if verbose else "CRITICAL",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # the project's loggers go to each flow run's log in Prefect too
        "PREFECT_LOGGING_EXTRA_LOGGERS": ",".join(provenance.PACKAGES),
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # e.g. `aigc train`: no flow run
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # MLflow prints "View run ... at: URL" to stdout when a run on a server ends: stdout
        # carries the summary (--json: exactly one JSON object)
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
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
        raise _fail(f"cannot use {h.root} as the aigc home: {e}", exit_codes.USAGE) from None
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
def main(ctx: typer.Context) -> None:
    """aigc-pipeline: data -> generative models -> curated content."""
    _stop_on_signals(ctx)


OWN_SIGNALS = ("run", "train")  # commands that handle SIGTERM and SIGINT themselves


def _stop_on_signals(ctx: typer.Context) -> None:
    """For the command's life, SIGTERM and SIGINT raise `interrupt.StopRequested` (exit 75, see
    `_App`); the handlers before it come back when the command ends (tests call commands
    in-process). `run` and `train` install their own first thing, with their own advice."""
    if ctx.invoked_subcommand in OWN_SIGNALS:
        return
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        raise interrupt.StopRequested(f"stopped by {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, stop) for s in interrupt.SIGNALS}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)

    ctx.call_on_close(restore)


def _fail(message: str, code: int = exit_codes.FAILED) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _crashed(e: Exception, verbose: bool, what: str = "") -> typer.Exit:
    """An unexpected error as one line (exit 1), after `what` (e.g. "ingest digits: "); its
    traceback too with -v. The CLI owns the console."""
    if verbose:
        err.print_exception()
    return _fail(f"{what}{type(e).__name__}: {e}")


def _name(check, value):
    """`check(value)`, one of `aigc_core.names`' checks: a user-given name in its stored form.
    A name that breaks its rule is a usage error (exit 2), before anything starts."""
    try:
        return check(value)
    except names.InvalidName as e:
        raise _fail(str(e), exit_codes.USAGE) from None


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Checks of the user's input: a ValueError (a bad name, option, file, unknown family,
    preset, model, version or alias, bad settings) is a usage error, exit 2; a registry that
    could not be read is exit 1."""
    try:
        yield
    except registry_lookup.RegistryUnavailable as e:
        raise _fail(str(e), exit_codes.FAILED) from None
    except ValueError as e:
        raise _fail(str(e), exit_codes.USAGE) from None


MODEL_FAMILY_HELP = (
    "Model family: dcgan, vae or diffusion (images), charlstm, transformer or textvae (text), "
    "wavegan (audio), or a plugin's (`aigc families`)."
)
CONFIG_OPTION_HELP = (
    "Settings file (YAML or JSON) with sections model, train, curation (`aigc config schema`)."
)
SET_OPTION_HELP = (
    "One setting, e.g. train.lr=2e-4 or curation.image.min_confidence=0.8; repeatable; wins "
    "over --config."
)


@app.command()
def run(
    preset: str = typer.Option(
        "cpu",
        help="Training preset: smoke (seconds), cpu (minutes), gpu; for dcgan also seed "
        "(the seed's full recipe, for a GPU).",
        autocompletion=completion.presets,
    ),
    family: str = typer.Option(
        "dcgan", "--model", help=MODEL_FAMILY_HELP, autocompletion=completion.families
    ),
    dataset: str = typer.Option(
        None,
        help="Dataset name: built-in (default digits for image models, python-docs for text "
        "models, notes for audio models), or the name for --path.",
    ),
    path: Path = typer.Option(
        None,
        help="Files of a user dataset (IDX, image folder, text files for text models, a folder "
        "of WAV/FLAC files for audio models).",
    ),
    init_from: str = typer.Option(
        None, help="Warm start, e.g. models:/aigc-dcgan-digits@champion (nightly fine-tuning)."
    ),
    config: Path = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    sets: list[str] = typer.Option(None, "--set", help=SET_OPTION_HELP),
    force: bool = typer.Option(
        False,
        "--force",
        help="Train even when a registered version has this snapshot, config and code.",
    ),
    n: int = typer.Option(256, "--n", min=1, help="Items to generate from the champion."),
    seed: int = typer.Option(0, help="Seed of the content batch."),
    compress: bool = typer.Option(
        False,
        "--compress",
        help="End by compressing the champion (`aigc compress`): champion-compressed moves "
        "only within the family's tolerance.",
    ),
    min_confidence: float = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="Curation: keep images or clips the evaluator recognizes with at least this "
        "confidence (wins over curation.image/audio.min_confidence; default 0.9).",
    ),
    home: Path = typer.Option(
        None, envvar="AIGC_HOME", help="Where snapshots, MLflow and content go (default ./.aigc)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """Run the nightly pipeline once, embedded: ingest, validate, train, evaluate, register,
    promote, generate and curate; a night whose snapshot, settings and code match a registered
    version trains nothing (`--force` trains). SIGTERM or Ctrl-C: exit 75, after a checkpoint
    when training had begun (a rerun resumes it), otherwise with the stages done so far kept."""
    args = NightArgs(
        preset, family, dataset, path, init_from, config, sets or [], force, n, seed,
        min_confidence, home, verbose, compress,
    )  # fmt: skip
    # first thing: a signal at any moment after this ends the command with exit 75; the stages
    # around training are safe to cut anywhere (abort at once), training checkpoints first
    with interrupt.stop_on_signals():
        try:
            with interrupt.abort_on_signals():
                summary = _nightly(args)
        except interrupt.StopRequested as e:
            raise _fail(f"{e}\nRerun `aigc run` to go on.", exit_codes.INTERRUPTED) from None

    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    table = Table(title="aigc run", show_header=False)
    image = summary["batch_kind"] == "image"
    if image:
        quality = ("fid", "fid_floor", "evaluator_accuracy")
    elif summary["batch_kind"] == "audio":  # FAD beside its real-vs-real floor
        quality = ("fad", "fad_floor", "evaluator_accuracy", "recognized_fraction")
    else:  # the family's gate: its primary metric and floors (bits per char; a VAE's ELBO, KL)
        from aigc_core import families

        policy = families.get(family).policy
        quality = (policy.metric, *policy.minimums)
    metrics = summary.get("metrics") or {}
    for k in (
        "snapshot_id",
        "trained",
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
        v = summary[k] if k in summary else metrics.get(k)
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    if c := summary.get("compression"):
        table.add_row("compression", f"v{c['version']} {c['decision']}: {c['reason']}")
    out.print(table)
    batch = Path(summary["batch_dir"])
    if image:
        out.print(f"contact sheet: {batch / 'contact_sheet.png'}")
    out.print(f"review report: {batch / 'report.html'}")


DEFAULT_DATASET = {"image": "digits", "text": "python-docs", "audio": "notes"}  # by kind


@dataclasses.dataclass(frozen=True)
class NightArgs:
    """`aigc run`'s arguments, as given."""

    preset: str
    family: str
    dataset: str | None
    path: Path | None
    init_from: str | None
    config: Path | None
    sets: list[str]
    force: bool
    n: int
    seed: int
    min_confidence: float | None
    home: Path | None
    verbose: bool
    compress: bool = False


def _nightly(a: NightArgs) -> dict:
    """`aigc run`'s work: check the input, start Prefect, run the nightly flow; its summary."""
    dataset, overrides = _check_night(a)
    h = open_home(a.home, a.verbose)
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
                preset=a.preset,
                family=a.family,
                path=str(a.path) if a.path else None,
                init_from=a.init_from,
                n_generate=a.n,
                seed=a.seed,
                min_confidence=a.min_confidence,
                home=str(h.root),
                config=overrides or None,
                force=a.force,
                compress=a.compress,
            )
    except ContractViolation as e:
        raise _fail(f"validate: {e}\nNothing was trained or registered.") from None
    except Interrupted as e:  # a signal during training: its checkpoint is written
        raise _fail(
            f"{e}\nRerun `aigc run`: training resumes from that checkpoint.",
            exit_codes.INTERRUPTED,
        ) from None
    except Exception as e:
        raise _crashed(e, a.verbose) from None


def _check_night(a: NightArgs) -> tuple[str, dict]:
    """Every argument of `aigc run`, before the Prefect server starts: the fast checks first
    (family and preset from the catalog, names, files, the warm start's model in the registry),
    then those that load torch (seconds): the settings against the family, a built-in dataset
    of the family's kind.
    The dataset name (defaulted by the family's kind) and the settings overrides."""
    with usage_errors():
        entry = preflight.family_choice(a.family, a.preset)
        kind = entry["kind"]
        if a.compress and "compression" in entry and entry["compression"] is None:
            raise ValueError(
                f"--compress: the {a.family} family has no compression method (`aigc families`)"
            )
        dataset = names.dataset(DEFAULT_DATASET[kind] if a.dataset is None else a.dataset)
        preflight.existing_path("--path", a.path)
        preflight.init_from(Home.resolve(a.home), a.init_from)
        overrides = preflight.overrides(a.config, a.sets)
        preflight.resolved(a.family, a.preset, overrides)
        preflight.dataset_source(dataset, a.path, kind)
    return dataset, overrides


# Command groups live in their own modules and register on `app` when imported.
from aigc import (  # noqa: E402, F401
    compress_commands,
    config_commands,
    data_commands,
    family_commands,
    generate_commands,
    ops_commands,
    registry_commands,
    train_commands,
)
