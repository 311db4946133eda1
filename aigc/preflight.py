"""Checks of a command's arguments before anything slow starts: no Prefect server, no flow run,
no MLflow import for a call that cannot succeed.

A mistyped call used to create a flow run that failed (and stayed in Prefect as Failed), after
the embedded server's start-up; now each command that starts a flow or acts on the registry runs
these first, cheapest first, and a wrong argument is a usage error (exit 2) in well under two
seconds for names, references and files. Every failure is a ValueError subclass naming the input
and the choices, except `registry_lookup.RegistryUnavailable` (the registry could not be read).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aigc import family_catalog, registry_lookup
from aigc_core import stages
from aigc_core.paths import Home

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")  # models:/..., runs:/..., s3://..., file:///...


class MissingFile(ValueError):
    """A file or folder an option names does not exist (or is not the right kind)."""


def family_choice(family: str, preset: str | None) -> dict:
    """The family's catalog entry (kind, presets); UnknownChoice listing the choices. Fast: the
    catalog, not the registry (see `family_catalog`)."""
    return family_catalog.check_choice(family, preset)


def model_ref(home: Home, ref: str) -> tuple[str, int] | None:
    """The (model, version) `ref` names, checked in the registry without MLflow; None when the
    store is one only MLflow reads (the flow then checks it)."""
    registry = registry_lookup.open_registry(home)
    return registry_lookup.resolve_ref(registry, ref) if registry is not None else None


def model_version(home: Home, name: str, version: str | None = None) -> None:
    """Model `name` (and its `version`, when given) exist in the registry."""
    registry = registry_lookup.open_registry(home)
    if registry is None:
        return
    if version is None:
        registry_lookup.check_model(registry, name)
    else:
        registry_lookup.check_version(registry, name, version)


def init_from(home: Home, value: str | None) -> None:
    """--init-from: a `models:/` URI of a registered version that exists, another URI (left to
    MLflow), or an existing folder."""
    if not value:
        return
    ref = registry_lookup.model_uri_ref(value)
    if ref is not None:
        model_ref(home, ref)
    elif not _URI.match(value) and not Path(value).is_dir():
        raise MissingFile(
            f"--init-from {value}: no such folder, and not a model URI "
            f"(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH)"
        )


def dataset_source(dataset: str, path: Path | None, kind: str | None = None) -> None:
    """Without --path the dataset must be a built-in one, and of the family's `kind` when
    given (a text family cannot train on digits). Imports the data layer (torch): run it after
    the fast checks."""
    if path is not None:
        return
    from aigc_core.data.ingest import builtin_datasets

    builtin = builtin_datasets()  # name -> kind
    if dataset not in builtin:
        raise MissingFile(
            f"unknown dataset {dataset!r}; built-in datasets: {', '.join(sorted(builtin))}, "
            f"or give --path to your own files"
        )
    if kind is not None and builtin[dataset] != kind:
        raise ValueError(
            f"dataset {dataset!r} holds {builtin[dataset]} data; this model family trains on "
            f"{kind}: choose a {kind} dataset (`aigc families` shows each family's kind)"
        )


def snapshot(home: Home, snapshot_id: str) -> None:
    """A snapshot with this id is published (`datasets/<name>/<id>/manifest.json`, DESIGN.md
    section 3), looked up as a folder name without importing the data layer (torch); its
    contents are verified when it is opened."""
    if not any(home.datasets.glob(f"*/{snapshot_id}/manifest.json")):
        raise MissingFile(
            f"no snapshot with id {snapshot_id!r} under {home.datasets} (`aigc datasets` lists "
            f"them)"
        )


def existing_file(option: str, path: Path | None) -> None:
    if path is not None and not path.is_file():
        raise MissingFile(f"{option} {path}: no such file")


def existing_path(option: str, path: Path | None) -> None:
    if path is not None and not path.exists():
        raise MissingFile(f"{option} {path}: no such file or folder")


# the largest class index a label spec may name before the model is known: published items
# hold it as int16 (`requested_label`)
MAX_LABEL = 2**15 - 1


def labels(spec: str | None, labels_file: Path | None) -> str | None:
    """The label spec of `--labels` or `--labels-file` (not both), its format checked ("7",
    "3,7", "3:0.7,7:0.3"; the file readable, one spec a line); None when neither is given.
    Whether the model is conditional and knows these classes is `model_request`'s to check
    (and the batch plan's, from its saved config). Raises LabelsError (a ValueError)."""
    if spec is not None and labels_file is not None:
        raise ValueError("give either --labels or --labels-file, not both")
    if labels_file is not None:
        existing_file("--labels-file", labels_file)
    from aigc_core.generation.labels import LabelsError, load_labels_file, parse_labels

    where = f"--labels-file {labels_file}" if labels_file is not None else "--labels"
    try:
        text = load_labels_file(labels_file) if labels_file is not None else spec
        if text is not None and not text.strip():
            raise LabelsError("empty: give a class index, e.g. --labels 7, or leave it out")
        parse_labels(text, MAX_LABEL + 1)
    except LabelsError as e:
        raise LabelsError(f"{where}: {e}") from None
    return spec


def generation_options(guidance: float | None, sampling_steps: int | None) -> None:
    """--guidance a finite number >= 0, --sampling-steps >= 1. Whether the model's family takes
    them (a diffusion model does) is `model_request`'s to check."""
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise ValueError(f"--guidance must be a finite number >= 0, got {guidance}")
    if sampling_steps is not None and sampling_steps < 1:
        raise ValueError(f"--sampling-steps must be >= 1, got {sampling_steps}")


def model_request(
    home: Home,
    found: tuple[str, int] | None,
    spec: str | None,
    labels_file: Path | None,
    options: Mapping[str, Any],
) -> None:
    """Whether the registered version `found` (`model_ref`'s answer) takes what `aigc generate`
    asks of it, as the batch plan (`aigc_core.content.plan.make_plan`) checks it and in its
    words, but from the registry and the family catalog (no torch, no MLflow, no model files):

    - class labels and generation options of a text model: none taken (an audio model takes
      labels, and of the options those its family's `params` name: none);
    - a generation option (`options`: name -> value, None not given) its family does not take:
      the family's request options are its catalog entry's `params`;
    - labels (`spec`, or the file's) asked of an unconditional model or out of its classes: the
      version's `aigc.num_classes` tag, recorded at registration.

    What the registry does not say is left to the plan: a store only MLflow reads, a version
    without a family tag, a family the catalog does not know, a version registered before the
    `num_classes` tag. Call it after `labels` and `generation_options` checked the values."""
    given = [k for k, v in options.items() if v is not None]
    if found is None or (spec is None and labels_file is None and not given):
        return
    registry = registry_lookup.open_registry(home)
    if registry is None:
        return
    name, version = found
    tags = registry.version_tags(name, version)
    family = stages.tag(tags, "family")
    entry = family_catalog.entry(family) if family else None
    if entry is None:
        return
    model = f"model {name} version {version}"
    asked = spec is not None or labels_file is not None
    if entry["kind"] == "text":  # an audio model takes labels, as an image model does
        flags = ", ".join(["--labels"] * asked + [_flag(k) for k in given])
        raise ValueError(
            f"{model} generates {entry['kind']}, and class labels and image generation "
            f"options ({flags}) apply to image models (labels to audio models too); drop them"
        )
    if "params" in entry:
        takes = [k for k in entry["params"] if k != "labels"]
        for option in sorted(given):
            if option not in takes:
                known = ", ".join(_flag(k) for k in takes)
                raise ValueError(
                    f"{model} is a {family} model, which takes no {_flag(option)} option "
                    + (f"(its generation options: {known})" if known else "(nor any other)")
                    + f"; drop {_flag(option)}"
                )
    num_classes = stages.tag(tags, "num_classes")
    if asked and num_classes.isdigit():
        from aigc_core.generation.labels import LabelsError, load_labels_file, parse_labels

        try:
            parse_labels(load_labels_file(labels_file) if labels_file else spec, int(num_classes))
        except LabelsError as e:
            raise LabelsError(f"{model}: {e}") from None


def _flag(name: str) -> str:
    """The command-line option of a generation option: sampling_steps -> --sampling-steps."""
    return "--" + name.replace("_", "-")


def overrides(config: Path | None, sets: Sequence[str], steps: int | None = None) -> dict:
    """The --config file and --set items as the settings module reads them (syntax only; the
    family's fields are checked by `resolved`). `steps` is `aigc train --steps N`, a shorthand
    for a last `--set train.steps=N`."""
    existing_file("--config", config)
    from aigc_core import settings

    items = [*sets, *([f"train.steps={steps}"] if steps is not None else [])]
    return settings.load_overrides(config, items)


def resolved(family: str, preset: str, config: dict):
    """The family's resolved settings for `preset` with the overrides; SettingsError naming a
    key the family does not have, a wrong type, a value out of range. The overrides are first
    checked against the family's settings schema from the catalog (`overrides_fit`, no torch);
    then `settings.resolve`, the authority, loads the family (torch: seconds)."""
    if config:
        overrides_fit(family, config)
    from aigc_core import families, settings

    return settings.resolve(families.get(family), preset, config or None)


# --- settings overrides against the cached schema -----------------------------------------

# What the schema decides: a value out of these bounds, or of the wrong type or not among the
# choices (unless pydantic's lax mode might convert it: `_lax`), fails pydantic's check of the
# field too; the messages are pydantic's. Any other failure (e.g. uniqueItems, which a set's
# duplicates pass) is left to settings.resolve.
_BOUNDS = {
    "minimum": "greater than or equal to",
    "exclusiveMinimum": "greater than",
    "maximum": "less than or equal to",
    "exclusiveMaximum": "less than",
}
_TYPES = {
    "integer": "a valid integer",
    "number": "a valid number",
    "boolean": "a valid boolean",
    "string": "a valid string",
    "array": "a valid list",
    "object": "a valid dictionary",
    "null": "None",
}
# strings pydantic's lax mode reads as booleans (a field need not be strict)
_BOOL_TEXT = {"0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes"}


def overrides_fit(family: str, overrides: dict) -> None:
    """The overrides checked without loading the family: the model and train sections against
    the family's settings schema from the catalog (`family_catalog.settings_schema`, with the
    `jsonschema` package), the curation section by the policy itself. Raises SettingsError worded
    as `settings.resolve` words it (the key path, what is wrong, what is allowed) when every
    problem found is certain: an unknown or data-dependent key, a value of the wrong type or out
    of range. Returns silently otherwise (no schema, a value pydantic might convert, a rule
    across fields): `settings.resolve` decides."""
    entry = family_catalog.settings_schema(family)
    if entry is None:
        return
    from aigc_core.curation.policy import Policy, PolicyError
    from aigc_core.settings import SettingsError

    problems: list[str] = []
    for section in ("model", "train"):
        found = _section_problems(entry, family, section, overrides.get(section))
        if found is None:
            return
        problems += found
    try:
        Policy.from_dict(overrides.get("curation"), source="", prefix="curation.")
    except PolicyError as e:
        problems.append(str(e))
    if problems:
        raise SettingsError("; ".join(problems))


def _section_problems(entry: dict, family: str, section: str, changes) -> list[str] | None:
    """The problems of one section's overrides, as `settings.resolve` reports them (unknown
    keys, else data-dependent ones, else each value's); None if one cannot be decided here."""
    if not changes:
        return []
    from jsonschema import Draft202012Validator

    from aigc_core import settings

    schema = entry["schema"]
    definition = schema["properties"][section]
    ref = definition.get("$ref", "")
    if ref:
        definition = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
    allowed = list(definition.get("properties", {}))
    if not allowed:
        return None
    derived = entry["derived"][section]
    unknown = [str(k) for k in changes if k not in allowed and k not in derived]
    if unknown:
        return [settings.unknown_keys(section, family, unknown, allowed)]
    fixed = [k for k in changes if k in derived]
    if fixed:
        return [settings.derived_keys(section, family, fixed)]
    errors = Draft202012Validator(schema).iter_errors({section: changes})
    order = {name: i for i, name in enumerate(allowed)}  # pydantic reports in field order
    problems = []
    for error in sorted(errors, key=lambda e: order.get(_field(e), len(order))):
        said = _explain(error)
        if said is None:
            return None
        problems += said
    return problems


def _field(error) -> str | None:
    """The section key an error is under (its path is SECTION.KEY...)."""
    path = list(error.absolute_path)
    return str(path[1]) if len(path) > 1 else None


def _explain(error) -> list[str] | None:
    """A jsonschema error as pydantic's messages for it (`config_types.describe`'s format);
    None when pydantic might accept the value (see `_BOUNDS`, `_lax`)."""
    value, kind = error.instance, error.validator
    loc = ".".join(str(p) for p in error.absolute_path)
    if kind == "anyOf":
        return _explain_optional(error)
    if kind in _BOUNDS:
        return [f"{loc}: Input should be {_BOUNDS[kind]} {error.validator_value} (got {value!r})"]
    if kind == "type":
        return _explain_type(loc, [error], value)
    if kind in ("enum", "const"):
        choices = error.validator_value if kind == "enum" else [error.validator_value]
        if any(str(c) == str(value) for c in choices):  # e.g. "1" for 1: pydantic may convert
            return None
        shown = [repr(c) for c in choices]
        expected = " or ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)
        return [f"{loc}: Input should be {expected} (got {value!r})"]
    return None


def _explain_optional(error) -> list[str] | None:
    """An optional field (`X | None`, anyOf X and null): X's errors, or a type error naming X;
    None for other unions, whose members pydantic explains one by one (resolve's to say)."""
    branches = error.validator_value
    others = [i for i, b in enumerate(branches) if b.get("type") != "null"]
    if len(branches) != 2 or len(others) != 1:
        return None
    errs = [e for e in error.context if e.relative_schema_path[0] == others[0]]
    wrong_type = [e for e in errs if e.validator == "type" and not e.relative_path]
    if wrong_type:
        return _explain_type(".".join(map(str, error.absolute_path)), wrong_type, error.instance)
    said = [_explain(e) for e in errs]
    return None if not said or None in said else [line for lines in said for line in lines]


def _explain_type(loc: str, errors: list, value) -> list[str] | None:
    """A value's type errors: "Input should be a valid integer"; None when pydantic might
    convert the value, or the type has a `format` (a date converts)."""
    types = []
    for e in errors:
        if "format" in e.schema:
            return None
        types += [e.validator_value] if isinstance(e.validator_value, str) else e.validator_value
    if _lax(value, types):
        return None
    expected = " or ".join(_TYPES.get(t, t) for t in types)
    return [f"{loc}: Input should be {expected} (got {value!r})"]


def _lax(value, types: list[str]) -> bool:
    """Whether pydantic's lax mode (a field not marked strict) might read `value` as one of the
    JSON `types`: numbers from numeric text or booleans, booleans from 0, 1 and words such as
    "yes", text from numbers (`coerce_numbers_to_str`)."""
    text = value.strip().lower() if isinstance(value, str) else None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    for t in types:
        if t in ("integer", "number") and (isinstance(value, bool) or _numeric(text)):
            return True
        if t == "boolean" and ((number and value in (0, 1)) or text in _BOOL_TEXT):
            return True
        if t == "string" and number:
            return True
    return False


def _numeric(text: str | None) -> bool:
    if text is None:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True
