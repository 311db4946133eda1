"""The `aigc` command as a user runs it: a fresh home, a real process, nothing mocked."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
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

    # mistyped calls leave no flow run behind (they used to leave a Failed one each)
    before = flow_runs(home)  # the night and its content batch
    assert len(before) == 2 and all(state == "COMPLETED" for _, state in before), before
    for args in (
        ["generate", "--model", "nosuch", "--n", "1"],
        ["generate", "--model", "aigc-dcgan-digits/7", "--n", "1"],
        ["generate", "--model", "aigc-dcgan-digits", "--n", "1", "--top-p", "2"],
        ["run", "--preset", "huge"],
        ["run", "--preset", "smoke", "--set", "train.nosuch=1"],
    ):
        bad = aigc(*args, home=home, timeout=120)
        assert bad.returncode == 2, (args, bad.stderr)
    assert flow_runs(home) == before

    # the same night again: same snapshot, settings and code, so nothing is trained and the
    # version made the first time is reported
    again = aigc("run", "--preset", "smoke", "--n", "32", "--json", home=home)
    assert again.returncode == 0, again.stderr
    repeat = json.loads(again.stdout)
    assert repeat["trained"] is False and repeat["model_version"] == "1"
    assert repeat["run_id"] == summary["run_id"] and not repeat["promoted"]
    assert repeat["promotion_reason"].startswith("unchanged: version 1")


def flow_runs(home: Path) -> list[tuple[str, str]]:
    """(name, state type) of every flow run in the home's Prefect database."""
    db = (home / "prefect" / "prefect.db").resolve()
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        return sorted(con.execute("SELECT name, state_type FROM flow_run").fetchall())


def test_unknown_preset_is_a_clear_error(tmp_path):
    p = aigc("run", "--preset", "huge", home=tmp_path / "h", timeout=60)
    assert p.returncode == 2
    assert "unknown preset 'huge'" in p.stderr and "Traceback" not in p.stderr


# argument checks of every command (exit 2 before anything starts), exit codes and shell
# completion: test_cli_checks.py


@pytest.mark.slow
def test_run_passes_config_sets_and_force_to_the_night(tmp_path):
    """`--config` and `--set` reach the training run's settings; `--force` retrains a night
    whose snapshot, settings and code match a registered version."""
    import mlflow

    home = tmp_path / "h"
    cfg = tmp_path / "night.yaml"
    cfg.write_text("model:\n  g_width: 8\ntrain:\n  steps: 2\n")
    args = ["run", "--preset", "smoke", "--n", "8", "--config", str(cfg), "--set", "train.steps=3"]
    first = aigc(*args, "--json", home=home)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["trained"] is True
    again = aigc(*args, "--force", "--json", home=home)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["trained"] is True and summary["model_version"] == "2"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    params = client.get_run(summary["run_id"]).data.params
    assert params["train.steps"] == "3" and params["model.g_width"] == "8"
