"""Where the running code comes from: recorded on runs and registered versions."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_revision() -> str:
    """The short git revision of the project's checkout, or "unknown" outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
