"""`aigc generate`: batch content generation from a registered model."""

from __future__ import annotations

from aigc.cli import app  # noqa: F401
