"""A training run's active-run pointer and training data (aigc_core.training.runs): pure, no
tracker, no training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aigc_core import families
from aigc_core.data.snapshot import image_table, read_table, text_table, write_snapshot
from aigc_core.process import host_id, start_time
from aigc_core.training.checkpoint import checkpoint_path
from aigc_core.training.runs import ActiveRun, Start, running, trained_run, training_data
from tests.conftest import tiny_images

RUN = "a" * 32


@pytest.fixture
def active(tmp_path) -> ActiveRun:
    return ActiveRun(tmp_path / "runs", "dcgan", "0123456789abcdef", "smoke")


def point(active: ActiveRun, **content) -> None:
    active.path.parent.mkdir(parents=True, exist_ok=True)
    active.path.write_text(json.dumps(content))


def checkpoint(active: ActiveRun, run_id: str = RUN) -> None:
    path = checkpoint_path(active.runs / run_id / "checkpoints", 2)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_pointer_is_named_by_family_snapshot_and_preset(active):
    assert active.path.name == "dcgan-0123456789abcdef-smoke.json"
    assert active.path.parent == active.runs / "active"


def test_no_pointer_starts_a_new_run(active):
    assert active.read() is None and active.start("never") == Start(None)


def test_an_unknown_resume_mode_is_refused(active):
    with pytest.raises(ValueError, match="resume must be one of"):
        active.start("sometimes")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_run_training_in_a_live_process_is_never_taken_over(active):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        point(active, run_id=RUN, pid=other.pid, start=start_time(other.pid), host=host_id())
        checkpoint(active)
        for resume in ("auto", "never"):
            with pytest.raises(RuntimeError, match=f"in progress in process {other.pid}"):
                active.start(resume)
    finally:
        other.kill()
        other.wait()


def test_a_dead_run_without_a_checkpoint_is_stale_and_replaced(active):
    point(active, run_id=RUN, pid=dead_pid(), start=0, host=host_id())
    for resume in ("auto", "never"):
        assert active.start(resume) == Start(None, stale=RUN)


def test_a_dead_run_with_a_checkpoint_is_resumed_or_refused(active):
    point(active, run_id=RUN, pid=dead_pid(), start=0, host=host_id())
    checkpoint(active)
    assert active.start("auto") == Start(RUN)
    with pytest.raises(RuntimeError, match="did not finish; resume it"):
        active.start("never")
    point(active, run_id=RUN)  # released: no owner
    assert active.start("auto") == Start(RUN)


def test_an_unreadable_pointer_holds_nothing(active):
    active.path.parent.mkdir(parents=True)
    active.path.write_text("{not json")
    assert active.read() == {} and active.start("never") == Start(None, stale=None)


def test_this_process_and_a_pointer_without_owner_are_not_running():
    assert not running({"run_id": RUN, "pid": os.getpid(), "start": 0, "host": host_id()})
    assert not running({"run_id": RUN})


def test_hold_release_and_clear(active):
    active.hold(RUN)
    held = json.loads(active.path.read_text())
    assert held["run_id"] == RUN and held["pid"] == os.getpid() and held["host"] == host_id()
    active.release(RUN)  # no checkpoint: nothing to resume, nothing left to block a start
    assert not active.path.exists()
    active.hold(RUN)
    checkpoint(active)
    active.release(RUN)  # resumable: the pointer stays, held by no process
    assert json.loads(active.path.read_text()) == {"run_id": RUN}
    active.clear()
    assert active.read() is None


def test_training_data_follows_the_familys_kind(tmp_path):
    data = tiny_images(n=40)
    snap = write_snapshot(tmp_path, "tiny", image_table(data), kind="image", source="t", params={})
    images, counts = training_data(families.get("dcgan"), snap, read_table(snap))
    assert images.images.shape[1:] == (1, 28, 28) and counts == {"train_images": len(images.images)}
    with pytest.raises(ValueError, match="the charlstm family trains on text snapshots; snapshot"):
        training_data(families.get("charlstm"), snap, read_table(snap))
    docs = [f"document number {i}." for i in range(30)]
    text = write_snapshot(tmp_path, "docs", text_table(docs), kind="text", source="t", params={})
    out, counts = training_data(families.get("transformer"), text, read_table(text))
    assert out.images is None and counts["train_characters"] == len(out.text)


def test_a_finished_run_becomes_its_stage_record(tmp_path):
    class Result:
        history = [{"loss_g": 1.0}, {"loss_g": 0.5, "loss_d": 0.7, "samples_per_s": 99.0}]
        start_step = 0

        class train_cfg:  # noqa: N801 - stands for a train config
            total_steps = 10

    data = tiny_images(n=20)
    snap = write_snapshot(tmp_path, "tiny", image_table(data), kind="image", source="t", params={})
    run = trained_run(
        Result, families.get("dcgan"), snap.ref(), RUN, tmp_path / RUN, "smoke", "cpu", {}
    )
    assert run.model_name == "aigc-dcgan-tiny" and run.steps == 10 and run.samples_per_s == 99.0
    assert run.final == {"final_loss_g": 0.5, "final_loss_d": 0.7}
    assert run.model_dir == str(tmp_path / RUN / "model") and run.parent_version is None
