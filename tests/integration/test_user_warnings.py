"""What the user is told without -v (issue 13, item 7): warnings that change what happens reach
stderr as one short line each, library noise does not; and staging folders left by a killed
writer are removed at the next publish while a live writer's are kept."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import prefect  # noqa: F401  (importing Prefect sets up logging, as in the CLI)
import pyarrow as pa
import pytest

from aigc.console_log import WarningsToStderr, show_warnings
from aigc_core.atomic import STAGING_PREFIX, remove_stale_staging, staged_dir, staging_path
from aigc_core.content import BatchPlan, run_shard
from aigc_core.content.shard import write_part
from aigc_core.data.snapshot import image_table, write_snapshot
from aigc_core.generation.shards import Shard
from aigc_core.paths import Home
from tests.conftest import tiny_images

ROOT = Path(__file__).resolve().parents[2]

# The CLI's own logging setup, then Prefect's (importing it configures logging: a root console
# handler at CRITICAL), then a resume from a corrupt latest checkpoint inside a worker thread, as
# in a Prefect task, next to warnings from libraries that must stay hidden.
RESUME = textwrap.dedent("""
    import logging, sys, threading, warnings
    from pathlib import Path
    import torch
    from aigc.cli import _settings
    from aigc_core.paths import Home

    root = Path(sys.argv[1])
    _settings(Home.resolve(root / "home").ensure(), verbose=False)
    from prefect import flow  # noqa: F401  (sets up Prefect's logging)
    from aigc_core.training.checkpoint import load_latest, save_checkpoint

    ck = root / "checkpoints"
    save_checkpoint(ck, 100, {"step": 100, "w": torch.zeros(3)})
    latest = save_checkpoint(ck, 200, {"step": 200, "w": torch.ones(3)})
    latest.write_bytes(latest.read_bytes()[:64])  # corrupt, e.g. a disk-full copy

    def task():
        logging.getLogger("prefect.flow_runs").warning("Finished in state Completed telemetry")
        logging.getLogger("mlflow.tracking").warning("mlflow library noise")
        logging.getLogger("great_expectations").warning("gx library noise")
        warnings.warn("a UserWarning from a library", UserWarning)
        print("resumed from step", load_latest(ck)[1]["step"], flush=True)

    t = threading.Thread(target=task)
    t.start()
    t.join()
""")


def test_a_corrupt_latest_checkpoint_falls_back_and_the_warning_reaches_stderr_without_v(
    tmp_path,
):
    p = subprocess.run(
        [sys.executable, "-c", RESUME, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))},
    )
    assert p.returncode == 0, p.stderr
    assert "resumed from step 100" in p.stdout
    lines = p.stderr.splitlines()
    bad = tmp_path / "checkpoints" / "ckpt-00000200.pt"
    assert lines == [
        f"warning: checkpoint {bad} is unusable (sha256 does not match its sidecar (truncated "
        "or corrupted)); falling back to the one before"
    ], p.stderr
    for noise in ("Traceback", "telemetry", "noise", "UserWarning"):
        assert noise not in p.stderr


def test_show_warnings_is_one_short_line_per_warning_and_leaves_libraries_alone(capsys):
    show_warnings(True)
    show_warnings(True)  # the CLI may set up twice in one process: still one handler
    try:
        assert sum(isinstance(h, WarningsToStderr) for h in logging.getLogger("tasks").handlers)
        # one of ours (Prefect's API handler may sit there too: the loggers go to run logs)
        ours = [
            h for h in logging.getLogger("aigc_core").handlers if isinstance(h, WarningsToStderr)
        ]
        assert len(ours) == 1
        logging.getLogger("aigc_core.data.snapshot").warning("snapshot %s reused", "d/abc")
        logging.getLogger("tasks.content").info("progress detail")  # below WARNING: hidden
        logging.getLogger("prefect.engine").warning("library noise")
        try:
            raise ValueError("details")
        except ValueError:
            logging.getLogger("flows.nightly").exception("the batch failed")
    finally:
        show_warnings(False)
    assert capsys.readouterr().err.splitlines() == [
        "warning: snapshot d/abc reused",
        "error: the batch failed",  # no traceback without -v
    ]
    assert not any(isinstance(h, WarningsToStderr) for h in logging.getLogger("aigc_core").handlers)


def test_a_reused_snapshot_is_a_warning(tmp_path, caplog):
    data = tiny_images(n=30)
    args = dict(kind="image", source="t", params=data.params)
    first = write_snapshot(tmp_path, "d", image_table(data), **args)
    with caplog.at_level(logging.WARNING, logger="aigc_core"):
        again = write_snapshot(tmp_path, "d", image_table(data), **args)
    assert not again.created
    assert f"snapshot d/{first.id} already holds this content: reused" in caplog.text


def test_a_reused_shard_is_a_warning(tmp_path, caplog):
    work, batch = tmp_path / "content" / ".work" / "b1", tmp_path / "content" / "b1"
    plan = BatchPlan(
        batch_id="b1",
        kind="image",
        family="dcgan",
        model_ref="m",
        model_name="m",
        model_version="1",
        model_uri="models:/m/1",
        model_dir=str(tmp_path / "model"),
        run_id="r",
        snapshot_id="s",
        seed=1,
        n=3,
        shards=(Shard(index=0, start=0, count=3, seed=1),),
        policy={"image": {}},
        work_dir=str(work),
        batch_dir=str(batch),
    )
    write_part(work / "part-00000.parquet", pa.table({"index": [0, 1, 2]}))
    with caplog.at_level(logging.WARNING, logger="aigc_core"):
        record = run_shard(plan, 0, Home(tmp_path))
    assert record.skipped is True
    assert "shard 0 of batch b1 reused from an earlier run" in caplog.text


# A writer that is killed (SIGKILL) while it publishes: its staging folder stays behind.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from aigc_core.atomic import staged_dir

    with staged_dir(Path(sys.argv[1])) as tmp:
        (tmp / "part-00000.parquet").write_bytes(b"half a part")
        Path(sys.argv[2]).write_text(str(tmp))
        time.sleep(600)
""")


def _start_writer(final: Path, ready: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final), str(ready)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the writer never started"
        time.sleep(0.05)
    return proc, Path(ready.read_text())


def test_a_stale_staging_folder_is_removed_at_the_next_publish_and_a_live_ones_kept(
    tmp_path, caplog
):
    content = tmp_path / "content"
    killed, killed_staging = _start_writer(content / "b1", tmp_path / "ready-1")
    live, live_staging = _start_writer(content / "b2", tmp_path / "ready-2")
    try:
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL
        assert killed_staging.is_dir() and live_staging.is_dir()
        legacy = content / f"{STAGING_PREFIX}b0-0a1b2c3d"  # an older version's: no owner
        legacy.mkdir()

        with (
            caplog.at_level(logging.WARNING, logger="aigc_core"),
            staged_dir(content / "b3") as tmp,  # the next publish in the same place
        ):
            (tmp / "manifest.json").write_text("{}")
        assert not killed_staging.exists()
        assert f"removed stale staging folder {killed_staging}" in caplog.text
        assert f"pid {killed.pid}" in caplog.text
        assert live_staging.is_dir() and legacy.is_dir()  # a live writer, an unknown one: kept
        assert (content / "b3" / "manifest.json").is_file()

        old = time.time() - 2 * 24 * 3600
        os.utime(legacy, (old, old))  # untouched for two days
        assert remove_stale_staging(content) == [legacy]
        assert live_staging.is_dir()
    finally:
        live.kill()
        live.wait(timeout=30)
    assert remove_stale_staging(content) == [live_staging]  # now its writer is gone too


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times come from /proc")
def test_staging_of_a_reused_pid_is_removed_and_another_hosts_is_kept(tmp_path):
    final = tmp_path / "datasets" / "d" / "abc"
    final.parent.mkdir(parents=True)
    mine = staging_path(final)  # .staging-abc-p<pid>-s<start>-h<host>-<random>
    mine.mkdir()
    reused = final.parent / re.sub(r"-s\d+-", "-s1-", mine.name)  # this pid, another start
    reused.mkdir()
    elsewhere = final.parent / re.sub(r"-h[0-9a-f]{8}-", "-hffffffff-", reused.name)
    elsewhere.mkdir()
    assert remove_stale_staging(final.parent) == [reused]
    assert mine.is_dir() and elsewhere.is_dir()  # alive; on a host this one cannot check


def test_a_killed_snapshot_write_is_cleaned_up_by_the_next_ingest(tmp_path):
    data = tiny_images(n=30)
    stale = staging_path(tmp_path / "d" / "0123456789abcdef", pid=_dead_pid())
    stale.mkdir(parents=True)
    (stale / "part-00000.parquet").write_bytes(b"half")
    snap = write_snapshot(
        tmp_path, "d", image_table(data), kind="image", source="t", params=data.params
    )
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [snap.id]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=60)
    return p.pid
