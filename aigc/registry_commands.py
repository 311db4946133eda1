"""`aigc promote`, `aigc rollback`, `aigc models`: the registry's commands."""

from __future__ import annotations

from aigc.cli import app  # noqa: F401
