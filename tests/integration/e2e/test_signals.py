"""Signals stop `aigc train` cleanly at any moment (issue 13): exit 75, and either a checkpoint
or nothing written. A SIGTERM during start-up used to be swallowed (the task's inner handler
cleared the stop request and training ran to the end, exit 0) and Ctrl-C exited 130 with no
checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aigc_core.data.snapshot import image_table, text_table, write_snapshot
from aigc_core.paths import Home
from aigc_core.training import interrupt
from aigc_core.training.checkpoint import list_checkpoints
from aigc_core.training.interrupt import EXIT_INTERRUPTED
from tests.conftest import tiny_images

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[3]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))}
    return {**e, "OMP_NUM_THREADS": "1"}


def start(*args: str, home: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aigc", "train", *args, "--home", str(home)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT
    )


def image_snapshot(home: Path) -> str:
    data = tiny_images(n=64)
    snap = write_snapshot(
        Home(home).ensure().datasets, "tiny", image_table(data), kind="image", source=data.source,
        params=data.params,
    )  # fmt: skip
    return snap.id


def text_snapshot(home: Path) -> str:
    docs = [f"Line {i}: the cat sat on the mat and the dog sat on the log." for i in range(300)]
    snap = write_snapshot(
        Home(home).ensure().datasets, "cats", text_table(docs), kind="text", source="test",
        params={},
    )  # fmt: skip
    return snap.id


def catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler (Linux: SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def leftovers(home: Path) -> tuple[list[Path], list[Path]]:
    """(active-run pointers, checkpoints) under the home."""
    return list(home.glob("runs/active/*.json")), list(home.glob("runs/*/checkpoints/*.pt"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_during_startup_exits_75(tmp_path):
    home = tmp_path / "home"
    sid = image_snapshot(home)
    args = ["--snapshot", sid, "--model", "dcgan", "--preset", "smoke"]
    p = start(*args, home=home)
    deadline = time.monotonic() + 60
    while not catches_sigterm(p.pid):  # its handler is the command's first act: start-up
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
        time.sleep(0.002)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == EXIT_INTERRUPTED, err
    assert "stopped before training started; nothing was written" in err
    assert "Traceback" not in err
    assert leftovers(home) == ([], [])  # a clean no-op: nothing to resume, nothing in the way

    # the next plain start is not blocked (and --steps works for the DCGAN)
    p = start(*args, "--steps", "2", "--json", home=home)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert json.loads(out)["steps"] == 2


def test_sigint_exits_75_with_checkpoint(tmp_path):
    home = tmp_path / "home"
    sid = text_snapshot(home)
    p = start("--snapshot", sid, "--model", "charlstm", "--preset", "smoke", "--steps", "100000",
              "-v", home=home)  # fmt: skip
    deadline = time.monotonic() + 240
    while "step 5/" not in (line := p.stderr.readline()):  # smoke logs every 5 steps
        assert line and time.monotonic() < deadline, "training did not start"
    p.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = p.communicate(timeout=120)
    assert p.returncode == EXIT_INTERRUPTED, err
    assert "SIGINT received" in err and "--resume auto" in err
    pointers, checkpoints = leftovers(home)
    assert len(pointers) == 1 and len(checkpoints) == 1
    run_id = json.loads(pointers[0].read_text())["run_id"]
    [(step, _)] = list_checkpoints(home / "runs" / run_id / "checkpoints")
    assert 5 <= step < 100000
    # the pointer no longer names a process: the run is free to be resumed
    assert json.loads(pointers[0].read_text()) == {"run_id": run_id}


def test_sigterm_before_the_train_task_starts_writes_nothing(tmp_path):
    """The CLI's handler is in when the signal comes; the task's own block, entered later, must
    not clear it (the hole of issue 13): the task stops before creating a run."""
    import mlflow

    from aigc_core.data.snapshot import find_snapshot
    from aigc_core.training.loop import Interrupted
    from tasks.training import train_run

    home = tmp_path / "home"
    snap = find_snapshot(Home(home).datasets, image_snapshot(home)).ref()
    with interrupt.stop_on_signals():
        signal.raise_signal(signal.SIGTERM)  # during the command's start-up
        with pytest.raises(Interrupted, match="before training started"):
            train_run(snap, "smoke", str(home), family="dcgan", device="cpu", resume="never")
    assert leftovers(home) == ([], [])
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_during_aigc_run_exits_75_and_stops_its_prefect_server(tmp_path):
    """`aigc run` once its embedded Prefect server is starting: SIGTERM ends it with 75, and the
    server goes with it."""
    cmd = [sys.executable, "-m", "aigc", "run", "--preset", "smoke", "--home", str(tmp_path / "h")]
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT
    )
    server = None
    deadline = time.monotonic() + 120
    while server is None:
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
        for child in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split():
            if b"uvicorn" in Path(f"/proc/{child}/cmdline").read_bytes():
                server = int(child)
        time.sleep(0.1)
    assert catches_sigterm(p.pid)
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr and "Rerun `aigc run`" in " ".join(stderr.split()), stderr
    assert (
        not Path(f"/proc/{server}").exists()
        or "zombie" in Path(f"/proc/{server}/status").read_text()
    )
