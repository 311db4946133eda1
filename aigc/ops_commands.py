"""`aigc up`, `aigc down`, `aigc deploy`: the served mode's commands."""

from __future__ import annotations

from aigc.cli import app  # noqa: F401
