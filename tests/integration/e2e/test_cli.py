"""The `aigc` command as a user runs it: a fresh home, a real process, nothing mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AIGC = [sys.executable, "-m", "aigc"]


def aigc(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))
    }
    return subprocess.run(
        [*AIGC, *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=Path(__file__).parents[3],
    )


@pytest.mark.slow
def test_run_smoke_json_in_an_empty_home(tmp_path):
    home = tmp_path / "fresh"
    p = aigc("run", "--preset", "smoke", "--n", "32", "--json", home=home)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)  # stdout is exactly one JSON object
    for key in (
        "snapshot_id",
        "run_id",
        "model_name",
        "model_version",
        "promoted",
        "champion_version",
        "fid",
        "fid_floor",
        "batch_id",
        "batch_dir",
        "n_generated",
        "n_kept",
    ):
        assert key in summary
    assert summary["model_version"] == "1" and summary["promoted"] is True
    assert summary["n_generated"] == 32
    assert (Path(summary["batch_dir"]) / "manifest.json").exists()
    # normal output: no tracebacks, no telemetry noise
    for noise in ("Traceback", "telemetry", "CancelledError", "UserWarning"):
        assert noise not in p.stderr, p.stderr


def test_unknown_preset_is_a_clear_error(tmp_path):
    p = aigc("run", "--preset", "huge", home=tmp_path / "h", timeout=60)
    assert p.returncode == 2
    assert "unknown preset 'huge'" in p.stderr and "Traceback" not in p.stderr


def test_generate_refuses_bad_text_options_before_starting_anything(tmp_path):
    """Prompt files and sampling options are checked before Prefect or MLflow start."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    cases = [
        (["--prompt-file", str(tmp_path / "nope.txt")], "--prompt-file", "no such file"),
        (["--prompt-file", str(empty)], "empty.txt has", "no prompts"),
        (["--top-p", "1.5"], "--top-p: top_p must lie in (0, 1]", ""),
        (["--max-new-tokens", "0"], "--max-new-tokens: max_new_tokens must lie in", ""),
    ]
    for args, *needles in cases:
        p = aigc("generate", "--model", "m", "--n", "4", *args, home=tmp_path / "h", timeout=60)
        assert p.returncode == 2, (args, p.stderr)
        out = " ".join(p.stderr.split())  # Rich wraps long lines
        assert all(n in out for n in needles) and "Traceback" not in p.stderr, (args, out)
    assert not (tmp_path / "h" / "mlflow.db").exists()  # nothing was started
