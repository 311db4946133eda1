"""Model family names, kinds and presets for the CLI, without importing torch.

The family registry (`aigc_core.families.available()`) imports every family's module, and with
them torch and the models: ~3.5 s here, too slow to check `--model` and `--preset` or to answer a
TAB. What the CLI needs of them is what `aigc families --json` prints (each family's `to_dict()`:
name, kind, metric, presets, the names of its request options `params`, which `aigc generate`
checks its options against) and, to check `--config` / `--set` overrides before the family
loads, each family's settings schema (`settings_schema`: the JSON Schema of a config file,
`aigc_core.settings.json_schema(family)`, and the fields the data fills in). That is kept in a
cache file together with a fingerprint of everything it was built from:

- every file of the `aigc_core` package (size and modification time): the built-in families,
  their presets and config classes;
- the `aigc.families` entry points (name, target, distribution and version) and the files of
  each plugin's top-level module, found without importing it;
- the Python version and the environment's prefix.

A matching fingerprint reuses the file (tens of milliseconds); anything else rebuilds it from the
real registry and rewrites it. Warnings of plugins that failed to load are kept with it and
repeated on every use, as loading them would. The registry stays the authority: `aigc run` and
`aigc train` load the family itself before anything starts, so a catalog that were wrong could
only make a check slower, never let a bad choice through to a flow.

The file lives in $AIGC_CACHE_DIR, else $XDG_CACHE_HOME/aigc, else ~/.cache/aigc; where it cannot
be written the catalog is rebuilt on each use.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

from aigc_core import families as registry

log = logging.getLogger(__name__)

CACHE_ENV = "AIGC_CACHE_DIR"
FORMAT = 3  # of the cache file; a new one rebuilds it (3: each family's `params`)


class UnknownChoice(ValueError):
    """A model family or preset the registry does not know; the message lists the choices."""


def catalog() -> dict[str, dict]:
    """Every family's `to_dict()` by name, built-in ones first, as `aigc families --json`."""
    return {f["name"]: f for f in _load(announce=True)["families"]}


def settings_schema(family: str) -> dict | None:
    """What a config file for `family` is checked against, without loading the family:
    {"schema": the JSON Schema of a config file (`aigc_core.settings.json_schema`), "derived":
    {"model": [...], "train": [...]}, the fields its data fills in, which cannot be set}. None
    for an unknown family, or one whose configs have no such schema (a plugin's config that
    pydantic cannot describe, presets of different config classes): `settings.resolve` checks
    those. Says no plugin warnings: `catalog()` has said them for this command."""
    return _load(announce=False)["settings"].get(family)


def entry(family: str) -> dict | None:
    """The catalog entry (`to_dict()`) of `family`; None for an unknown one. Says no plugin
    warnings, as `settings_schema`: for a command that reads a family from a registered
    version rather than from its arguments."""
    return next((f for f in _load(announce=False)["families"] if f["name"] == family), None)


def family_names() -> list[str]:
    return list(catalog())


def preset_names(family: str) -> list[str]:
    """The presets of `family`; [] for an unknown family."""
    return list(catalog().get(family, {}).get("presets", {}))


def check_choice(family: str, preset: str | None = None) -> dict:
    """The catalog entry of `family`, after checking it and `preset` (when given) exist;
    UnknownChoice listing the choices otherwise."""
    known = catalog()
    if family not in known:
        raise UnknownChoice(
            f"unknown model family {family!r}; choose one of {', '.join(known)} "
            f"(`aigc families` lists them)"
        )
    presets = known[family]["presets"]
    if preset is not None and preset not in presets:
        raise UnknownChoice(
            f"unknown preset {preset!r} for {family}; choose one of {', '.join(presets)}"
        )
    return known[family]


# --- the fingerprint ------------------------------------------------------------------------


def fingerprint() -> str:
    """A digest of everything the catalog is built from (see the module's docstring)."""
    core = Path(registry.__file__).resolve().parents[1]
    parts: list = [FORMAT, sys.version, sys.prefix, str(core), _stats(core)]
    for ep in sorted(entry_points(group=registry.ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        version = (dist.name, dist.version) if dist is not None else None
        parts.append([ep.name, ep.value, version, _module_stats(ep.module)])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _stats(root: Path) -> list:
    """(relative path, size, mtime) of every file under `root` but compiled ones."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            st = p.stat()
            out.append([str(p.relative_to(root)), st.st_size, st.st_mtime_ns])
    return out


def _module_stats(module: str) -> list:
    """The file stats of a plugin's top-level module or package, found without running it."""
    top = module.split(".", 1)[0]
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [_stats(Path(loc)) for loc in spec.submodule_search_locations]
    if spec.origin and Path(spec.origin).is_file():
        st = Path(spec.origin).stat()
        return [spec.origin, st.st_size, st.st_mtime_ns]
    return []


# --- the cache file -------------------------------------------------------------------------


def _load(announce: bool) -> dict:
    """The cache's content, rebuilt when its fingerprint does not match; `announce`: repeat the
    warnings of plugins that failed to load (loading the registry logs its own)."""
    key = fingerprint()
    cached = _read(key)
    if cached is None:
        cached = _build(key)
        _write(cached)
    elif announce:
        for message in cached["warnings"]:
            registry.log.warning("%s", message)
    return cached


def cache_file() -> Path:
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(xdg) / "aigc"
    # one file per environment: its prefix and import path (PYTHONPATH can add plugins), not
    # sys.path[0], which is the working directory of `python -m aigc`
    env = json.dumps([sys.prefix, sys.path[1:]])
    return Path(root) / f"families-{hashlib.sha256(env.encode()).hexdigest()[:12]}.json"


def _read(key: str) -> dict | None:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != key:
        return None
    return data


def _build(key: str) -> dict:
    """Load the real registry (torch and all), keeping the warnings it logs."""
    with _captured_warnings(registry.log) as warnings:
        found = registry.available()
    return {
        "fingerprint": key,
        "families": [json.loads(json.dumps(f.to_dict(), default=str)) for f in found.values()],
        "settings": {name: _settings(f) for name, f in found.items()},
        "warnings": warnings,
    }


def _settings(family) -> dict | None:
    """A family's `settings_schema` entry, from its config classes."""
    from pydantic import PydanticUserError

    from aigc_core import settings

    classes = {(type(p.model), type(p.train)) for p in family.presets.values()}
    if len(classes) != 1:  # one schema cannot describe every preset's overrides
        return None
    model_cls, train_cls = classes.pop()
    try:
        schema = settings.json_schema(family)
        derived = {
            "model": sorted(settings.derived_fields(model_cls)),
            "train": sorted(settings.derived_fields(train_cls)),
        }
    except (PydanticUserError, TypeError, ValueError) as e:  # a plugin's plain config classes
        log.debug("no settings schema for the %s family: %s", family.name, e)
        return None
    return json.loads(json.dumps({"schema": schema, "derived": derived}, default=str))


def _write(data: dict) -> None:
    """Write the cache atomically (a temporary file renamed into place): concurrent commands
    each write a whole file, and a reader never sees half of one."""
    path, tmp = cache_file(), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as e:
        log.debug("family catalog not cached in %s: %s", path, e)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _captured_warnings(logger: logging.Logger) -> Iterator[list[str]]:
    handler = _ListHandler()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
