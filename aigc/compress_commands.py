"""`aigc compress`: a registered version's compressed copy, gated onto `champion-compressed`.

Exit codes (`aigc.exit_codes`): 0 the compressed version is registered and holds
`champion-compressed` (moved now, or already), or its parent is not the champion (then it is
served as NAME/VERSION); 4 refused: its quality fell outside the family's tolerance of its
parent's, the numbers are printed and no alias moved; 2 bad input (an unknown model, version or
alias, a family without a compression method, a version that is itself compressed); 1 the run
failed.

The version and its family are checked in the registry and the family catalog directly (no
MLflow, no torch) before the Prefect server starts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table

from aigc import completion, exit_codes, family_catalog, preflight, registry_lookup
from aigc.cli import _name, app, out, usage_errors
from aigc.flow_run import run_flow
from aigc_core import names, stages
from aigc_core.paths import Home


@app.command()
def compress(
    model: str = typer.Option(
        ...,
        "--model",
        help="Registered model to compress: NAME (its champion), NAME@ALIAS or NAME/VERSION.",
        autocompletion=completion.model_refs,
    ),
    tolerance: float = typer.Option(
        None,
        "--tolerance",
        min=0.0,
        help="Largest relative worsening of the family's primary metric accepted, e.g. 0.1: "
        "at most 10% worse than the parent (default: the family's).",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Compress again even when this version was compressed before (same method, code).",
    ),
    home: Path = typer.Option(
        None, envvar="AIGC_HOME", help="Where snapshots, MLflow and content go (default: ./.aigc)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """Compress a registered version with its family's method, score it beside its parent on
    the same held-out data, register it (tags: compressed_from, compression_method), and point
    `champion-compressed` at it only if its quality stays within the family's tolerance of the
    champion's. Exit 4 when refused (the numbers are printed; no alias moves)."""
    model = _name(names.model_ref, model)
    with usage_errors():  # fail before starting anything
        if tolerance is not None and not math.isfinite(tolerance):
            raise ValueError(f"--tolerance must be a finite number >= 0, got {tolerance}")
        check_version(Home.resolve(home), model)
    summary = run_flow(
        home,
        verbose,
        "flows.compress:compress_model",
        model=model,
        tolerance=tolerance,
        force=force,
    )
    refused = summary["decision"] == "refused"
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        out.print(_table(summary))
        colour = "red" if refused else "green" if summary["decision"] == "accepted" else "yellow"
        out.print(f"[{colour}]{summary['decision']}[/]: {summary['reason']}", highlight=False)
        holder = summary["alias_version"]
        out.print(f"{summary['alias']}: " + (f"v{holder}" if holder else "none"))
    if refused:
        raise typer.Exit(exit_codes.REFUSED)


def check_version(home: Home, ref: str) -> None:
    """The version `ref` names exists, is not itself compressed, and its family (by the
    catalog) has a compression method: ValueErrors (usage) otherwise. A store only MLflow reads
    is left to the flow, which checks the same."""
    found = preflight.model_ref(home, ref)
    registry = registry_lookup.open_registry(home) if found else None
    if registry is None:
        return
    name, version = found
    tags = registry.version_tags(name, version)
    what = f"model {name} version {version}"
    if source := stages.tag(tags, "compressed_from"):
        raise ValueError(
            f"{what} is itself compressed (from version {source}); compress its parent"
        )
    family = stages.tag(tags, "family")
    entry = family_catalog.entry(family) if family else None
    if entry is not None and "compression" in entry and entry["compression"] is None:
        able = [n for n, f in family_catalog.catalog().items() if f.get("compression")]
        raise ValueError(
            f"{what}: the {family} family has no compression method; the families with one: "
            f"{', '.join(able) or 'none'}"
        )


def _table(s: dict) -> Table:
    table = Table(title="aigc compress", show_header=False)
    metric, parent, value = s["metric"], s["parent_value"], s["value"]
    rows = {
        "model_name": s["model_name"],
        "parent_version": s["parent_version"],
        "version": s["version"] + (" (compressed before: reused)" if s["reused"] else ""),
        "method": s["method"],
        "size": f"{s['parent_bytes']:,} -> {s['bytes']:,} bytes ({s['size_ratio']:.2f}x)",
        metric: f"{_num(parent)} (parent) -> {_num(value)}",
        "tolerance": f"{s['tolerance']:g}",
        "run_id": s["run_id"],
    }
    for k, v in rows.items():
        table.add_row(k, str(v))
    return table


def _num(x) -> str:
    return "-" if x is None else f"{x:.4g}"
