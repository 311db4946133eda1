"""Shell completion of the values `aigc` options take (`aigc --install-completion`).

Each function is a Typer `autocompletion` callback: it gets the word being completed (and the
command line parsed so far, `ctx.params`) and returns the candidates that start with it. They read
only the fast sources: model families and presets from the family catalog (`family_catalog`, no
torch), registered models, versions and aliases from the registry read directly
(`registry_lookup`, no MLflow), in the home the command line names (--home, else $AIGC_HOME,
else ./.aigc). A completion must never fail or print: any error gives no candidates.

Bash splits words at '@' (it is in COMP_WORDBREAKS), so there NAME@ALIAS completes up to the
name only and NAME/VERSION completes fully; zsh and fish complete both.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable

import typer

from aigc import family_catalog, registry_lookup
from aigc_core.paths import Home

log = logging.getLogger(__name__)


def _quiet(fn: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """No candidates, rather than a traceback in the user's shell, when a source fails."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> list[str]:
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - a completion must never break the shell
            log.debug("completion %s failed: %s", fn.__name__, e)
            return []

    return wrapper


def _matching(candidates: Iterable[str], incomplete: str) -> list[str]:
    return [c for c in candidates if c.startswith(incomplete)]


@_quiet
def families(incomplete: str) -> list[str]:
    """--model of `aigc run` and `aigc train`: the family names."""
    return _matching(family_catalog.family_names(), incomplete)


@_quiet
def presets(ctx: typer.Context, incomplete: str) -> list[str]:
    """--preset: the presets of the family given (or defaulted) on the command line, else of
    every family."""
    family = ctx.params.get("family") or ctx.params.get("model")
    catalog = family_catalog.catalog()
    chosen = [catalog[family]] if family in catalog else catalog.values()
    seen = dict.fromkeys(p for f in chosen for p in f["presets"])
    return _matching(seen, incomplete)


def _registry(ctx: typer.Context) -> registry_lookup.Registry | None:
    return registry_lookup.open_registry(Home.resolve(ctx.params.get("home")))


@_quiet
def model_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """MODEL of promote, rollback and models: the registered model names."""
    registry = _registry(ctx)
    return _matching(registry.model_names(), incomplete) if registry else []


@_quiet
def model_refs(ctx: typer.Context, incomplete: str) -> list[str]:
    """--model of `aigc generate`: NAME, then NAME@ALIAS and NAME/VERSION once the name is
    typed with its separator."""
    registry = _registry(ctx)
    if registry is None:
        return []
    for sep in ("@", "/"):
        if sep in incomplete:
            name = incomplete.split(sep, 1)[0] if sep == "@" else incomplete.rsplit(sep, 1)[0]
            info = registry.model(name)
            if info is None:
                return []
            tails = info.aliases if sep == "@" else [str(v) for v in info.versions]
            return _matching((f"{name}{sep}{t}" for t in tails), incomplete)
    return _matching(registry.model_names(), incomplete)


@_quiet
def versions(ctx: typer.Context, incomplete: str) -> list[str]:
    """VERSION of `aigc promote`: the versions of the MODEL given before it, newest first."""
    registry, name = _registry(ctx), ctx.params.get("model")
    info = registry.model(name) if registry and name else None
    return _matching((str(v) for v in reversed(info.versions)), incomplete) if info else []
