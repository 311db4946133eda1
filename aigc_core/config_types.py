"""Field types shared by the typed configs: model, training and curation settings.

Configs are pydantic dataclasses (`dataclasses.fields`, `replace` and `asdict` keep working)
that check their values on construction and describe themselves as JSON Schema
(`pydantic.TypeAdapter(cls).json_schema()`). Numbers are strict: `True` is not a step count
and the string "2e-4" is not a learning rate (a config file's YAML or JSON gives real numbers);
an int is accepted where a float is expected.

`DERIVED` (as in `DerivedStr`) marks a model field the family fills in from the training data
(a language model's vocabulary): such a field is `readOnly` in the schema and a config file
cannot set it.

Imported by the model files, so by every served model: pydantic only, no project module.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError

# extra="forbid": an unknown keyword is an error, as for a plain dataclass (a typo must fail);
# a field's docstring (the string literal under it) is its description in the JSON Schema
CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True)

PositiveInt = Annotated[int, Field(strict=True, ge=1)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
PositiveFloat = Annotated[float, Field(strict=True, gt=0)]
NonNegativeFloat = Annotated[float, Field(strict=True, ge=0)]
Probability = Annotated[float, Field(strict=True, ge=0, le=1)]
BelowOne = Annotated[float, Field(strict=True, ge=0, lt=1)]  # [0, 1): dropout, Adam's betas
Bool = Annotated[bool, Field(strict=True)]

DERIVED = {"readOnly": True}  # json_schema_extra of a field filled in from the training data
DerivedStr = Annotated[str, Field(strict=True, json_schema_extra=DERIVED)]
# a conditional model's number of classes: the snapshot's label set (0: unconditional)
DerivedInt = Annotated[int, Field(strict=True, ge=0, json_schema_extra=DERIVED)]


def class_count(cfg) -> int:
    """K of a conditional config (0: unconditional); a conditional config whose classes were
    never filled in cannot build a module."""
    if cfg.conditional and cfg.num_classes < 1:
        raise ValueError(
            "a conditional model needs num_classes, which the family's prepare fills in from "
            "the training data's labels"
        )
    return cfg.num_classes


def is_derived(field_info: Any) -> bool:
    """Whether a pydantic FieldInfo is marked `DERIVED` (data-dependent, not settable)."""
    extra = getattr(field_info, "json_schema_extra", None)
    return isinstance(extra, dict) and extra.get("readOnly") is True


def describe(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: `prefix.key.path: what is wrong (got VALUE)`, for messages a
    user can act on (pydantic's own text carries type codes and a URL)."""
    lines = []
    for e in error.errors(include_url=False):
        loc = ".".join(str(p) for p in (*([prefix] if prefix else []), *e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        got = "" if e["type"] in ("value_error", "missing") else f" (got {e['input']!r})"
        lines.append(f"{loc or '(config)'}: {msg}{got}")
    return "; ".join(lines)
