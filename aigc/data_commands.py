"""`aigc ingest` and `aigc datasets`: the data layer's commands."""

from __future__ import annotations

from aigc.cli import app  # noqa: F401
