"""The one check of every name a user gives (DESIGN.md section 6), and of paths built from names.

A name enters through the CLI or a flow's parameters and ends up in a folder name
(`datasets/<dataset>/<snapshot-id>/`, `content/<batch-id>/`, the promotion lock
`registry/locks/<model>.lock`) or in a registry call, so each kind has one strict pattern:

- dataset: 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit, no `..`. Case-insensitive:
  `MNIST` is `mnist`, and the lowercase form is what is stored (folder names, model names), so
  two spellings never become two datasets (or one folder on a case-insensitive disk).
- model (a registered model, e.g. `aigc-dcgan-digits`): 1-128 of `A-Z a-z 0-9 . _ -`, starting
  with a letter or digit, no `..`. Case-sensitive, as MLflow's names are: used exactly as given.
  Models the pipeline registers are lowercase (`aigc-<family>-<dataset>`).
- alias (e.g. `champion`, `challenger`): 1-64 of `A-Z a-z 0-9 _ -`, starting with a letter.
  Case-sensitive, as MLflow's aliases are.
- version: a registered model version number (1-9 digits).
- snapshot id and batch id: 16 hexadecimal digits, as `aigc datasets` and batch manifests show
  them. Case-insensitive (hex digits); the lowercase form is used.

`check` raises `InvalidName`, a ValueError whose message names the input and states the rule;
`inside` raises it too when a path built from a name would resolve outside its root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


class InvalidName(ValueError):
    """A user-given name that breaks its kind's rule, or a path from a name that leaves its root."""


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern
    text: str  # the rule in words, for the error message
    lowercase: bool  # case-insensitive: checked and returned in lowercase


_NAME = r"[a-z0-9][a-z0-9._-]"
RULES: dict[str, Rule] = {
    "dataset name": Rule(
        re.compile(rf"{_NAME}{{0,63}}"),
        "a dataset name is 1-64 characters: letters, digits, '.', '_' and '-', starting with a "
        "letter or digit, with no '..' (case-insensitive: stored in lowercase)",
        lowercase=True,
    ),
    "model name": Rule(
        re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"),
        "a model name is 1-128 characters: letters, digits, '.', '_' and '-', starting with a "
        "letter or digit, with no '..' (case-sensitive), e.g. aigc-dcgan-digits",
        lowercase=False,
    ),
    "alias": Rule(
        re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}"),
        "an alias is 1-64 characters: letters, digits, '_' and '-', starting with a letter "
        "(case-sensitive), e.g. champion",
        lowercase=False,
    ),
    "version": Rule(
        re.compile(r"[0-9]{1,9}"), "a version is a number, e.g. 3 (`aigc models` lists them)", False
    ),
    "snapshot id": Rule(
        re.compile(r"[0-9a-f]{16}"),
        "a snapshot id is 16 hexadecimal digits (0-9, a-f), as `aigc datasets` shows them",
        lowercase=True,
    ),
    "batch id": Rule(
        re.compile(r"[0-9a-f]{16}"),
        "a batch id is 16 hexadecimal digits (0-9, a-f), as a batch's manifest shows them",
        lowercase=True,
    ),
}


def check(kind: str, value: object) -> str:
    """`value` if it is a valid name of `kind` (a key of RULES), in its stored form (lowercase
    for case-insensitive kinds); else InvalidName naming the input and the rule."""
    rule = RULES[kind]
    text = value.lower() if rule.lowercase and isinstance(value, str) else value
    if not isinstance(text, str) or not rule.pattern.fullmatch(text) or ".." in text:
        raise InvalidName(f"invalid {kind} {value!r}: {rule.text}")
    return text


def dataset(value: object) -> str:
    return check("dataset name", value)


def model(value: object) -> str:
    return check("model name", value)


def alias(value: object) -> str:
    return check("alias", value)


def version(value: object) -> str:
    return check("version", str(value) if isinstance(value, int) else value)


def snapshot_id(value: object) -> str:
    return check("snapshot id", value)


def batch_id(value: object) -> str:
    return check("batch id", value)


def model_ref(ref: object) -> str:
    """A model reference, NAME (its champion), NAME@ALIAS or NAME/VERSION, with each part
    checked; returned as given (surrounding spaces dropped)."""
    if not isinstance(ref, str):
        raise InvalidName(f"model {ref!r}: expected NAME, NAME@ALIAS or NAME/VERSION")
    ref = ref.strip()
    if "@" in ref:
        name, tail = ref.split("@", 1)
        alias(tail)
    elif "/" in ref:
        name, tail = ref.rsplit("/", 1)
        version(tail)
    else:
        name = ref
    model(name)
    return ref


def parse_model_ref(
    ref: str, default_alias: str = "champion"
) -> tuple[str, str | None, str | None]:
    """ "NAME", "NAME@ALIAS" or "NAME/VERSION" -> (name, alias, version); a bare NAME means its
    `default_alias`. Only the shape is checked here (`model_ref` checks each part's rule)."""
    ref = ref.strip()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = None
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
        alias = None
        if not version.isdigit():
            raise ValueError(f"model {ref!r}: a version after '/' is a number, e.g. {name}/3")
    else:
        name, alias, version = ref, default_alias, None
    if not name or (alias is not None and not alias):
        raise ValueError(f"model {ref!r}: expected NAME, NAME@ALIAS or NAME/VERSION")
    return name, alias, version


def registered_model_name(family: str, dataset: str) -> str:
    """One registered model per family and dataset, e.g. aigc-dcgan-digits."""
    return f"aigc-{family}-{dataset}"


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path`, if it resolves (symlinks and `..` followed) to somewhere below `root`; else
    InvalidName."""
    real_root = Path(root).resolve()
    real = Path(path).resolve()
    if real_root not in real.parents:
        raise InvalidName(
            f"{path} resolves to {real}, outside {real_root}: a path built from a name must "
            f"stay inside the aigc home"
        )
    return Path(path)
