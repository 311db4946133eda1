"""`aigc families`: the model families this installation can train, built-in and plugins."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from aigc.cli import app, out


@app.command()
def families(
    as_json: bool = typer.Option(False, "--json", help="Print the families as JSON."),
) -> None:
    """List every model family (the built-in ones and those installed packages add through the
    `aigc.families` entry points): its kind, the promotion gate's primary metric and its
    presets."""
    from aigc_core import families as registry

    found = registry.available()
    if as_json:
        print(json.dumps([f.to_dict() for f in found.values()], indent=2))
        return
    table = Table(title="model families")
    for column in ("family", "kind", "primary metric", "presets", "description"):
        table.add_column(column)
    for f in found.values():
        better = "lower" if f.policy.lower_is_better else "higher"
        table.add_row(
            f.name,
            f.kind,
            f"{f.policy.metric} ({better} is better)",
            ", ".join(f.presets),
            f.description,
        )
    out.print(table)
