"""`aigc config schema` and `aigc config show`: the settings a run can take, and those it would
use.

`schema` prints the JSON Schema of a config file (`aigc run --config FILE`), with a family's
model and train fields when `--model` names one: point an editor at it (e.g. the YAML language
server's `# yaml-language-server: $schema=aigc-settings.json`) for completion and checks as
you type. `show` resolves a family's preset with a config file and `--set` items exactly as
`aigc run` and `aigc train` do (`aigc_core.settings`), and prints the result and its digest;
a bad setting is a usage error (exit 2) naming the file or item, the key and what is allowed.
Nothing here starts Prefect or MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from aigc import completion
from aigc.cli import (
    CONFIG_OPTION_HELP,
    MODEL_FAMILY_HELP,
    SET_OPTION_HELP,
    app,
    out,
    usage_errors,
)

config_app = typer.Typer(
    no_args_is_help=True,
    help="Settings: the config file's JSON Schema, and a preset's resolved settings.",
)
app.add_typer(config_app, name="config")


@config_app.command()
def schema(
    model: str = typer.Option(
        None,
        "--model",
        help="Include this family's model and train fields. " + MODEL_FAMILY_HELP,
        autocompletion=completion.families,
    ),
) -> None:
    """Print the JSON Schema of a config file (`--config FILE` of `aigc run` and `aigc train`):
    sections model, train (with --model: that family's fields) and curation."""
    with usage_errors():
        from aigc_core import families, settings

        family = families.get(model) if model else None
        print(json.dumps(settings.json_schema(family), indent=2))


@config_app.command()
def show(
    model: str = typer.Option(
        ..., "--model", help=MODEL_FAMILY_HELP, autocompletion=completion.families
    ),
    preset: str = typer.Option(
        ..., help="The preset to start from (`aigc families`).", autocompletion=completion.presets
    ),
    config: Path = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    sets: list[str] = typer.Option(None, "--set", help=SET_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the settings as one JSON object."),
) -> None:
    """Print the settings a run of this family and preset would use, after the config file and
    the --set items, with their digest (the same model and train settings give the same
    digest). The table shows the curation of the family's content kind; --json all of it. A
    setting the family does not have, a wrong type or a value out of range is an error (exit
    2)."""
    with usage_errors():
        from aigc_core import families, settings

        family = families.get(model)
        overrides = settings.load_overrides(config, sets or ())
        source = settings.source_of(config, sets)
        resolved = settings.resolve(family, preset, overrides, source=source)
    if as_json:
        summary = {"family": family.name, "preset": preset, "digest": resolved.digest()}
        print(json.dumps({**summary, **resolved.to_dict()}, sort_keys=True))
        return
    changed = set(_dotted(overrides))
    table = Table(title=f"{family.name} / {preset}  (digest {resolved.digest()[:12]})")
    for column in ("setting", "value", "from"):
        table.add_column(column)
    shown = ("model.", "train.", f"curation.{family.curation}.")  # its content's curation
    data = {f"model.{name}" for name in settings.derived_fields(resolved.model_cfg)}
    for key, value in resolved.flat().items():
        if key == "model.family" or not key.startswith(shown):
            continue
        origin = "default" if key.startswith("curation.") else "preset"
        origin = "training data" if key in data else "override" if key in changed else origin
        table.add_row(key, "" if key in data else json.dumps(value), origin)
    out.print(table)


def _dotted(value, prefix: str = "") -> list[str]:
    """The dotted keys of the leaves of nested mappings: those the overrides set."""
    if isinstance(value, dict) and value:
        return [k for name, v in value.items() for k in _dotted(v, f"{prefix}{name}.")]
    return [prefix.removesuffix(".")]
