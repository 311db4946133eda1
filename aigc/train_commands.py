"""`aigc train`: train one model family on a snapshot."""

from __future__ import annotations

from aigc.cli import app  # noqa: F401
