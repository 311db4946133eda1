"""Settings without editing code: a config file and `--set` overrides on top of a preset.

    # run.yaml: aigc run --model dcgan --preset cpu --config run.yaml --set train.lr=2e-4
    model:               # fields of the family's model config (aigc config schema --model F)
      g_width: 32
    train:               # fields of its train config
      steps: 500
      lr: 1.0e-4
    curation:            # the curation policy file's format (aigc_core.curation.policy)
      image: {min_confidence: 0.8}
      text: {blocklist: [badword]}

Every section is optional and so is every key: a key left out keeps the preset's value (the
policy's default for curation). What is checked where:

- `load_overrides(config_file, sets)` reads the file (YAML or JSON) and applies `--set
  section.key=value` items (values are YAML scalars, or `[a, b]` / `{k: v}`); it checks the
  syntax only: the sections, that each is a mapping, that the values are plain data.
- `resolve(family, preset, overrides)` applies them to the family's preset and checks them
  against its config classes (pydantic dataclasses, `aigc_core.config_types`): an unknown key
  is an error naming the allowed ones, so is a wrong type or a value out of range.
- Fields a family fills in from the training data (`DERIVED`, e.g. a language model's `vocab`,
  set by `Family.prepare`) cannot be set: the data decides them.

Numbers are read as YAML 1.2 reads them (`2e-4` is a number, as in JSON). `Resolved.digest()`
identifies the resolved model and train config (not the curation, which does not change the
trained model) across processes: "the same settings" for skipping unchanged training.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError

from aigc_core.config_types import describe, is_derived
from aigc_core.curation.policy import Policy, PolicyError, load_yaml

if TYPE_CHECKING:  # the families import torch: the CLI reads a config file without it
    from aigc_core.families.base import Family

SECTIONS = ("model", "train", "curation")
SUFFIXES = (".yaml", ".yml", ".json")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class SettingsError(ValueError):
    """A config file or `--set` item that cannot be used: the message names the file or item,
    the key path (e.g. `train.lr`) and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A family's preset with the overrides applied: the configs a run trains with (before the
    family's `prepare` fills in data-dependent fields) and the curation policy."""

    model_cfg: Any
    train_cfg: Any
    policy: Policy = dataclasses.field(default_factory=Policy)

    def to_dict(self) -> dict:
        """{"model": {...}, "train": {...}, "curation": {...}}: plain JSON (`flat()` for
        dotted keys)."""
        return {
            "model": config_dict(self.model_cfg),
            "train": config_dict(self.train_cfg),
            "curation": _plain(self.policy.to_dict(), "curation"),
        }

    def flat(self) -> dict[str, Any]:
        """Dotted keys, e.g. {"train.lr": 0.0002, "curation.image.min_confidence": 0.9}: the
        shape of MLflow params (lists stay values)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}", v)
            else:
                out[prefix] = value

        for section, values in self.to_dict().items():
            walk(section, values)
        return out

    def digest(self) -> str:
        """sha256 (hex) of the model and train config: see `config_digest`."""
        return config_digest(self.model_cfg, self.train_cfg)


def config_digest(model_cfg: Any, train_cfg: Any) -> str:
    """sha256 (hex) of the canonical JSON (sorted keys, no spaces) of a model and a train
    config, the model's data-dependent fields left out: the same before and after the family's
    `prepare` (the data is identified by the snapshot id), in any process."""
    derived = derived_fields(model_cfg)
    model = {k: v for k, v in config_dict(model_cfg).items() if k not in derived}
    payload = {"model": model, "train": config_dict(train_cfg)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def derived_fields(cfg: Any) -> set[str]:
    """The fields of a config (or config class) that its family fills in from the training
    data (`aigc_core.config_types.DERIVED`, e.g. `vocab`): not settable, not in the digest."""
    cls = cfg if isinstance(cfg, type) else type(cfg)
    return {name for name, info in _fields(cls).items() if is_derived(info)}


def config_dict(cfg: Any) -> dict:
    """A config as plain JSON data: its `to_dict()` (a model config's carries "family") or, for
    a plugin's config without one, its fields."""
    if hasattr(cfg, "to_dict"):
        data = cfg.to_dict()
    elif isinstance(cfg, BaseModel):
        data = cfg.model_dump(mode="json")
    else:
        data = dataclasses.asdict(cfg)
    return _plain(data, type(cfg).__name__)


# --- reading: a file and --set items ----------------------------------------------------------


def load_overrides(config_file: str | Path | None, sets: Sequence[str] | None = ()) -> dict:
    """The overrides of a config file (YAML or JSON; None: none) with `--set` items applied on
    top, e.g. "train.lr=2e-4", "model.g_width=32", "curation.image.min_confidence=0.8",
    "curation.text.blocklist=[spam, eggs]". Returns {"model": {...}, "train": {...},
    "curation": {...}} as plain JSON data, empty sections left out. Checks syntax only (see
    `resolve`)."""
    data: dict = {}
    if config_file is not None:
        data = _sections(_read(Path(config_file)), f"config file {config_file}")
    for item in sets or ():
        _apply_set(data, item)
    return {s: data[s] for s in SECTIONS if data.get(s)}


def source_of(config_file: str | Path | None, sets: Sequence[str] | None) -> str:
    """Where overrides came from, for `resolve(..., source=)`: "run.yaml", "--set" or
    "run.yaml, --set" (empty when there are none)."""
    return ", ".join([*([str(config_file)] if config_file else []), *(["--set"] if sets else [])])


def _read(path: Path) -> Any:
    if path.suffix.lower() not in SUFFIXES:
        raise SettingsError(f"config file {path} must end in .yaml, .yml or .json")
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SettingsError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"config file {path} is not UTF-8 text") from None
    import yaml

    try:
        return json.loads(raw) if path.suffix.lower() == ".json" else load_yaml(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise SettingsError(f"config file {path} is not valid {path.suffix[1:]}: {e}") from None


def _sections(data: Any, source: str) -> dict:
    """A copy of `data` checked to be {section: mapping of plain JSON data}; a null section is
    an empty one."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"{source}: expected a mapping with sections {', '.join(SECTIONS)}, "
            f"got {type(data).__name__}"
        )
    unknown = [str(k) for k in data if k not in SECTIONS]
    if unknown:
        raise SettingsError(
            f"{source}: unknown section(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(SECTIONS)}"
        )
    out = {}
    for section, values in data.items():
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise SettingsError(
                f"{source}: section {section!r} must be a mapping of settings, "
                f"got {type(values).__name__} {values!r}"
            )
        try:
            out[section] = _plain(values, section)
        except SettingsError as e:
            raise SettingsError(f"{source}: {e}") from None
    return out


def _apply_set(data: dict, item: str) -> None:
    """Put one `section.key[.key...]=value` item into `data`."""
    key, sep, raw = item.partition("=")
    path = key.strip().split(".")
    example = "e.g. train.lr=2e-4 or curation.image.min_confidence=0.8"
    if not sep or not key.strip():
        raise SettingsError(f"--set {item!r}: expected KEY=VALUE, {example}")
    if path[0] not in SECTIONS or len(path) < 2 or not all(path):
        raise SettingsError(
            f"--set {item!r}: KEY must be SECTION.NAME with SECTION one of "
            f"{', '.join(SECTIONS)}; {example}"
        )
    import yaml

    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = str(e).splitlines()[0]
        raise SettingsError(f"--set {item!r}: {raw!r} is not a YAML value ({problem})") from None
    try:
        value = _plain(value, key.strip())
    except SettingsError as e:
        raise SettingsError(f"--set {item!r}: {e}") from None
    node = data.setdefault(path[0], {})
    for i, part in enumerate(path[1:-1], start=1):
        if node.get(part) is None:
            node[part] = {}
        elif not isinstance(node[part], dict):
            where = ".".join(path[: i + 1])
            raise SettingsError(f"--set {item!r}: {where} is {node[part]!r}, not a mapping")
        node = node[part]
    node[path[-1]] = value  # keys are text: YAML's `2:` is "2", as JSON has it


def _plain(value: Any, where: str) -> Any:
    """`value` as plain JSON data: string keys, lists, finite numbers; anything else (a YAML
    date, a NaN) is an error naming its key path."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{where}: {value} is not a finite number")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise SettingsError(
        f"{where}: {value!r} ({type(value).__name__}) is not a number, string, boolean, list or "
        "mapping; quote it to make it a string"
    )


# --- resolving: against a family's preset -----------------------------------------------------


def resolve(
    family: Family, preset: str, overrides: dict | None = None, *, source: str = ""
) -> Resolved:
    """The family's preset with `overrides` ({"model": ..., "train": ..., "curation": ...}, as
    `load_overrides` returns) applied and checked. `source` (e.g. the config file's name)
    prefixes the messages. Raises SettingsError naming the key, the problem and what is
    allowed: an unknown preset, section or key, a data-dependent field, a wrong type or a value
    out of range."""
    where = f"{source}: " if source else ""
    sections = _sections(overrides, source or "settings")
    try:
        base = family.preset(preset)
    except ValueError as e:
        raise SettingsError(str(e)) from None
    problems = []  # every section's, so that one run of the command shows them all
    try:
        model_cfg = _override(base.model, sections.get("model"), "model", family.name)
    except SettingsError as e:
        problems.append(str(e))
    try:
        train_cfg = _override(base.train, sections.get("train"), "train", family.name)
    except SettingsError as e:
        problems.append(str(e))
    try:
        policy = Policy.from_dict(sections.get("curation"), source="", prefix="curation.")
    except PolicyError as e:
        problems.append(str(e))
    if problems:
        raise SettingsError(where + "; ".join(problems))
    return Resolved(model_cfg, train_cfg, policy)


def _override(cfg: Any, changes: dict | None, section: str, family: str) -> Any:
    """`cfg` with `changes` applied, validated by its class (a new instance)."""
    if not changes:
        return cfg
    fields = _fields(type(cfg))
    derived = derived_fields(cfg)
    settable = [n for n in fields if n not in derived]
    unknown = [str(k) for k in changes if k not in fields]
    if unknown:
        raise SettingsError(unknown_keys(section, family, unknown, settable))
    fixed = [k for k in changes if k in derived]
    if fixed:
        raise SettingsError(derived_keys(section, family, fixed))
    values = _values(cfg)
    values |= {k: _merged(values.get(k), v) for k, v in changes.items()}
    try:
        adapter = _adapter(type(cfg))
    except PydanticUserError as e:  # a plugin's config of types pydantic cannot check
        raise SettingsError(
            f"{section}: the {family} family's {type(cfg).__name__} cannot take overrides: {e}"
        ) from None
    try:
        return adapter.validate_python(values)
    except ValidationError as e:
        raise SettingsError(describe(e, section)) from None
    except (TypeError, ValueError) as e:  # a plugin's plain dataclass checking itself
        raise SettingsError(f"{section}: {e}") from None


def _merged(current: Any, change: Any) -> Any:
    """`change` applied to a field's `current` value: a mapping applied to a nested config
    (e.g. `train.augment`) keeps the fields it leaves out, as a section keeps the preset's."""
    if isinstance(change, dict) and dataclasses.is_dataclass(current):
        base = _values(current)
        return base | {k: _merged(base.get(k), v) for k, v in change.items()}
    return change


def unknown_keys(section: str, family: str, unknown: Sequence[str], allowed: Sequence[str]) -> str:
    """The message for keys a family's `section` config does not have (also the CLI's, which
    checks them before loading the family: `aigc.preflight`)."""
    return (
        "; ".join(f"{section}.{k}: unknown {section} setting of {family}" for k in unknown)
        + f"; allowed: {', '.join(allowed)}"
    )


def derived_keys(section: str, family: str, fixed: Sequence[str]) -> str:
    """The message for keys the family fills in from the training data (`DERIVED`)."""
    return "; ".join(
        f"{section}.{k} is filled in from the training data by the {family} family "
        "and cannot be set"
        for k in fixed
    )


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _fields(cls: type) -> dict[str, Any]:
    """Field name -> pydantic FieldInfo (None for a plain dataclass's) of a config class:
    a pydantic dataclass, a plain dataclass or a pydantic model (a plugin may use any)."""
    if isinstance(getattr(cls, "__pydantic_fields__", None), dict):
        return dict(cls.__pydantic_fields__)
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return dict(cls.model_fields)
    if dataclasses.is_dataclass(cls):
        return {f.name: None for f in dataclasses.fields(cls) if f.init}
    raise TypeError(f"{cls.__name__} is not a dataclass or a pydantic model")


def _values(cfg: Any) -> dict:
    return {name: getattr(cfg, name) for name in _fields(type(cfg))}


# --- JSON Schema ------------------------------------------------------------------------------


def json_schema(family: Family | None = None) -> dict:
    """The JSON Schema of a config file: its three sections, with the family's model and train
    config fields when `family` is given (every key optional: one left out keeps the preset's
    value, so the schema gives no defaults for them; data-dependent fields are left out)."""
    parts: dict[str, TypeAdapter] = {"curation": TypeAdapter(Policy)}
    if family is not None:
        preset = next(iter(family.presets.values()))
        parts = {
            "model": _adapter(type(preset.model)),
            "train": _adapter(type(preset.train)),
            **parts,
        }
    refs, defs = TypeAdapter.json_schemas([(k, "validation", a) for k, a in parts.items()])
    defs = defs.get("$defs", {})
    props = {k: refs[(k, "validation")] for k in parts}
    name = family.name if family else "FAMILY"
    for section in ("model", "train"):
        whose = f"the {family.name} family's" if family else "the family's"
        note = (
            f"Overrides of {whose} {section} config; a key left out keeps the preset's value "
            f"(see `aigc config show --model {name} --preset PRESET`)."
        )
        if family is None:
            props[section] = {
                "type": "object",
                "description": f"{note} Its keys: `aigc config schema --model FAMILY`.",
            }
        else:
            _as_overrides(_definition(props[section], defs), note)
    props["curation"] = {**props["curation"], "description": "The curation policy."}
    schema = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"aigc settings{f' of the {family.name} family' if family else ''}",
        "description": "A config file for `aigc run` / `aigc train --config FILE`: overrides of "
        "a preset's model and train config, and the curation policy.",
        "type": "object",
        "properties": {s: props[s] for s in SECTIONS},
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def _definition(ref: dict, defs: dict) -> dict:
    """The schema a property stands for: its `$defs` entry when it is a reference."""
    target = ref.get("$ref", "")
    return defs[target.rsplit("/", 1)[-1]] if target else ref


def _as_overrides(schema: dict, note: str) -> None:
    """Make a config class's schema that of its overrides (in place): no required keys, no
    defaults (the preset's apply), no data-dependent fields."""
    props = schema.get("properties", {})
    for name in [n for n, p in props.items() if p.get("readOnly")]:
        del props[name]
    for p in props.values():
        p.pop("default", None)
    schema.pop("required", None)
    schema["description"] = f"{note} {schema.get('description', '')}".strip()
