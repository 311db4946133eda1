"""Where the running code comes from: recorded on runs and registered versions."""

from __future__ import annotations

import hashlib
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


PACKAGES = ("aigc_core", "data_contracts", "tasks", "flows")  # what a pipeline run executes
_code_digest: str | None = None


def code_digest() -> str:
    """A digest of the pipeline's source: every .py file of its packages, path and bytes.

    Unlike the git revision it also sees uncommitted edits and works in an installed copy with
    no checkout; two runs with the same digest ran the same code. Computed once per process."""
    global _code_digest
    if _code_digest is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for package in PACKAGES:
            for f in sorted((root / package).rglob("*.py")):
                if "__pycache__" in f.parts:
                    continue
                h.update(f.relative_to(root).as_posix().encode() + b"\0")
                h.update(f.read_bytes() + b"\0")
        _code_digest = h.hexdigest()[:16]
    return _code_digest
