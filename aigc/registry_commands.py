"""`aigc promote`, `aigc rollback`, `aigc models`: the registry's commands.

Exit codes (`aigc.exit_codes`): 0 done (promoted, already the champion, rolled back, listed); 1
the gate refused the version, or an unexpected error; 2 bad input (unknown model or version,
--force without --reason, nothing to roll back to).

The model and version are looked up in the registry directly (`aigc.registry_lookup`, no MLflow)
before MLflow is imported (~4 s), so a wrong one is answered at once; `aigc models` reads the
whole listing that way.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
from pathlib import Path

import typer
from rich.table import Table

from aigc import completion, exit_codes, preflight, registry_lookup
from aigc.cli import _crashed, _fail, _name, app, err, open_home, out, usage_errors
from aigc_core import names
from aigc_core.paths import Home

HOME_OPTION = typer.Option(
    None, envvar="AIGC_HOME", help="Where snapshots, MLflow and content go [default: ./.aigc]."
)
JSON_OPTION = typer.Option(False, "--json", help="Print the result as one JSON object.")
VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Show library logs.")


def _registry(home: Path | None, verbose: bool):
    """Settings first, then the (slow to import) registry services."""
    h = open_home(home, verbose)
    with err.status("opening the MLflow registry...", spinner="dots"):
        from tasks import registry
    return h, registry


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _call(verbose: bool, fn, *args, **kwargs):
    from aigc_core.promotion import RegistryError

    try:
        return fn(*args, **kwargs)
    except (RegistryError, ValueError) as e:
        raise _fail(str(e).strip("'\""), exit_codes.USAGE) from None
    except Exception as e:
        raise _crashed(e, verbose) from None


@app.command()
def promote(
    model: str = typer.Argument(
        ...,
        help="Registered model, e.g. aigc-dcgan-digits.",
        autocompletion=completion.model_names,
    ),
    version: str = typer.Argument(
        ..., help="Version to make champion.", autocompletion=completion.versions
    ),
    force: bool = typer.Option(
        False, "--force", help="Skip the gate's comparison (needs --reason; recorded)."
    ),
    reason: str = typer.Option(None, "--reason", help="Why: required with --force."),
    home: Path = HOME_OPTION,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Gate VERSION against the champion and make it champion if it wins (compare-and-set,
    recorded in version tags and the audit log). Exit 1 when the gate refuses it."""
    model, version = _name(names.model, model), _name(names.version, version)
    if force and not (reason and reason.strip()):
        raise _fail(
            "--force needs --reason TEXT: a forced promotion is recorded with why",
            exit_codes.USAGE,
        )
    with usage_errors():
        preflight.model_version(Home.resolve(home), model, version)
    h, registry = _registry(home, verbose)
    result = _call(
        verbose,
        registry.promote_version,
        h,
        model,
        version,
        force=force,
        reason=reason,
        actor=_actor(),
    )
    if as_json:
        fields = dataclasses.asdict(result)
        print(json.dumps({"model_name": model, "version": version, **fields}, sort_keys=True))
    else:
        colour = "green" if result.promoted else "yellow"
        out.print(f"[{colour}]{model} v{version}: {result.decision}[/] - {result.reason}")
        out.print(f"champion: v{result.champion_version}")
    if result.decision in ("rejected", "conflict"):
        raise typer.Exit(exit_codes.FAILED)


@app.command()
def rollback(
    model: str = typer.Argument(
        ...,
        help="Registered model, e.g. aigc-dcgan-digits.",
        autocompletion=completion.model_names,
    ),
    reason: str = typer.Option("", "--reason", help="Why (recorded)."),
    home: Path = HOME_OPTION,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Point `champion` back at the champion the current one replaced (recorded)."""
    model = _name(names.model, model)
    with usage_errors():
        preflight.model_version(Home.resolve(home), model)
    h, registry = _registry(home, verbose)
    result = _call(verbose, registry.rollback, h, model, reason=reason, actor=_actor())
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    out.print(
        f"{model}: champion rolled back from v{result['previous_champion']} "
        f"to v{result['champion_version']}"
    )


@app.command()
def models(
    model: str = typer.Argument(
        None, help="Show only this registered model.", autocompletion=completion.model_names
    ),
    home: Path = HOME_OPTION,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """A table of registered models: versions, aliases, gate metrics and promotion decisions."""
    if model is not None:
        model = _name(names.model, model)
    listed = _listing(home, model, verbose)
    if as_json:
        print(json.dumps(listed, sort_keys=True))
        return
    if not listed:
        err.print("no registered models yet: `aigc run` trains and registers one")
        return
    from aigc_core.promotion import GATE_TAG_PREFIX as prefix

    for m in listed:
        gate_keys = sorted({k for v in m["versions"] for k in v["tags"] if k.startswith(prefix)})
        table = Table(title=m["name"])
        for col in ("version", "aliases", *(k[len(prefix) :] for k in gate_keys), "decision"):
            table.add_column(col, justify="right" if col != "aliases" else "left")
        table.add_column("reason", overflow="fold")
        for v in m["versions"]:
            tags = v["tags"]
            decision = tags.get("promotion.decision", "-")
            if "rollback.demoted_at" in tags:
                decision += ", rolled back"
            if source := tags.get("aigc.compressed_from"):  # a compressed copy: its own gate
                decision = f"compressed v{source}: {tags.get('compression.decision', '-')}"
            table.add_row(
                v["version"],
                ", ".join(v["aliases"]) or "-",
                *(_num(tags.get(k)) for k in gate_keys),
                decision,
                tags.get("rollback.reason")
                or tags.get("promotion.reason")
                or tags.get("compression.reason", ""),
            )
        out.print(table)


def _listing(home: Path | None, model: str | None, verbose: bool) -> list[dict]:
    """The registered models (only `model`, which must exist, when given): read directly from
    the store, or through MLflow where only MLflow can read it."""
    with usage_errors():
        reader = registry_lookup.open_registry(Home.resolve(home))
        if reader is not None:
            if model is not None:
                registry_lookup.check_model(reader, model)
            return [m for m in reader.list_models() if model in (None, m["name"])]
    h, registry = _registry(home, verbose)
    listed = _call(verbose, registry.list_models, h, model)
    if model is not None and not listed:
        raise _fail(f"no registered model {model!r}; `aigc models` lists them", exit_codes.USAGE)
    return listed


def _num(raw: str | None) -> str:
    if raw is None:
        return "-"
    try:
        return f"{float(raw):.4g}"
    except ValueError:
        return raw
