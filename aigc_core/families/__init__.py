"""Model families: the built-in ones and those installed packages add.

A package adds a family with an entry point in the group `aigc.families` naming a `Family`
object (or a function returning one), e.g. in its pyproject.toml:

    [project.entry-points."aigc.families"]
    mlp = "aigc_mlp:FAMILY"

`get(name)` finds a family by name, `available()` lists them all. A plugin whose entry point
fails to load is reported (a warning naming it) and left out; one that reuses a built-in's name
is refused.
"""

from __future__ import annotations

import functools
import importlib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the package stays cheap (no torch): the CLI reads its constants
    from aigc_core.families.base import Family

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "aigc.families"
BUILTIN = (
    "dcgan",
    "vae",
    "charlstm",
    "transformer",
    "diffusion",
    "textvae",
    "wavegan",
)  # modules with a FAMILY


@functools.cache
def available() -> dict[str, Family]:
    """Every family by name: the built-in ones first, then the installed plugins'."""
    from aigc_core.families.base import Family

    found = {n: importlib.import_module(f"{__name__}.{n}").FAMILY for n in BUILTIN}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
            family = obj() if callable(obj) and not isinstance(obj, Family) else obj
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the others
            log.warning("model family plugin %r (%s) failed to load: %s", ep.name, ep.value, e)
            continue
        if not isinstance(family, Family):
            log.warning("model family plugin %r (%s) is not a Family; ignored", ep.name, ep.value)
            continue
        if family.name in found:
            log.warning(
                "model family plugin %r (%s) reuses the name %r; ignored",
                ep.name,
                ep.value,
                family.name,
            )
            continue
        found[family.name] = family
    return found


def get(name: str) -> Family:
    """The family called `name`; a ValueError listing the known ones otherwise."""
    families = available()
    if name not in families:
        raise ValueError(f"unknown model family {name!r}; choose one of {', '.join(families)}")
    return families[name]


def family_names(kind: str | None = None) -> list[str]:
    return [n for n, f in available().items() if kind in (None, f.kind)]
