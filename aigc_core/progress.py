"""A tiny progress hook so long work can report without knowing who listens.

The CLI installs a Rich-backed reporter; everyone else (tests, deployments) gets the default,
which does nothing. Reporters receive (stage, completed, total) with total None when unknown.
"""

from __future__ import annotations

from collections.abc import Callable

Reporter = Callable[[str, int, "int | None"], None]


def _noop(stage: str, completed: int, total: int | None) -> None:
    return None


_reporter: Reporter = _noop


def set_reporter(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter or _noop


def report(stage: str, completed: int, total: int | None = None) -> None:
    _reporter(stage, completed, total)
