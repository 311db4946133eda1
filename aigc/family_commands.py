"""`aigc families`: the model families this installation can train, built-in and plugins.

Read from the family catalog (`aigc.family_catalog`): the registry's own `to_dict()` of each
family, cached with a fingerprint of the code it came from, so listing them does not import
torch (a first call, or one after the code changed, loads the registry: seconds).
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from aigc import family_catalog
from aigc.cli import app, out


@app.command()
def families(
    as_json: bool = typer.Option(False, "--json", help="Print the families as JSON."),
) -> None:
    """List every model family (the built-in ones and those installed packages add through the
    `aigc.families` entry points): its kind, the promotion gate's primary metric and its
    presets."""
    found = family_catalog.catalog()
    if as_json:
        print(json.dumps(list(found.values()), indent=2))
        return
    table = Table(title="model families")
    for column in ("family", "kind", "primary metric", "presets", "description"):
        table.add_column(column)
    for f in found.values():
        better = "lower" if f["lower_is_better"] else "higher"
        table.add_row(
            f["name"],
            f["kind"],
            f"{f['primary_metric']} ({better} is better)",
            ", ".join(f["presets"]),
            f["description"],
        )
    out.print(table)
