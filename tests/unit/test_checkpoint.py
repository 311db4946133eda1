"""Checkpoints: atomic files with sha256 sidecars, fallback past a bad latest one, exact resume."""

from __future__ import annotations

import logging

import pytest
import torch

from aigc_core import families
from aigc_core.training import engine
from aigc_core.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_latest,
    save_checkpoint,
)
from aigc_core.training.loop import Interrupted, capture

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
CPU = torch.device("cpu")


def _state(step: int) -> dict:
    return {"step": step, "config": {"family": "x"}, "w": torch.full((4,), float(step))}


def test_save_writes_a_sidecar_keeps_the_newest_and_loads_weights_only(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, _state(step), keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-00000003.pt",
        "ckpt-00000003.pt.sha256",
        "ckpt-00000004.pt",
        "ckpt-00000004.pt.sha256",
    ]  # no temporary files left behind
    path, state = load_latest(tmp_path)
    assert path.name == "ckpt-00000004.pt" and torch.equal(state["w"], torch.full((4,), 4.0))


def test_truncated_latest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, caplog):
    save_checkpoint(tmp_path, 10, _state(10))
    latest = save_checkpoint(tmp_path, 20, _state(20))
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # truncated, e.g. a disk-full copy
    with caplog.at_level(logging.WARNING):
        path, state = load_latest(tmp_path)
    assert state["step"] == 10 and path.name == "ckpt-00000010.pt"
    assert "ckpt-00000020.pt" in caplog.text and "sha256" in caplog.text


def test_checkpoint_without_sidecar_is_skipped_and_all_bad_refuses_to_restart(tmp_path):
    save_checkpoint(tmp_path, 1, _state(1))
    p2 = save_checkpoint(tmp_path, 2, _state(2))
    p2.with_name(p2.name + ".sha256").unlink()  # crashed between the two writes
    assert load_latest(tmp_path)[1]["step"] == 1
    (tmp_path / "ckpt-00000001.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none is valid"):
        load_latest(tmp_path)
    assert load_latest(tmp_path / "empty") is None  # nothing there: a fresh start is allowed


def _charlstm_run(tmp_path, name, steps, resume=False, stop=None):
    data = engine.TrainData(text=TEXT)
    return engine.train_model(
        families.get("charlstm"),
        "smoke",
        data,
        CPU,
        tmp_path / name,
        resume=resume,
        overrides={"steps": steps, "checkpoint_every": 4, "log_every": 4, "bf16": False},
        stop=stop,
    )


def test_a_stopped_run_resumed_in_process_matches_an_uninterrupted_run(tmp_path):
    full = _charlstm_run(tmp_path, "full", 12)
    calls = iter(range(100))
    with pytest.raises(Interrupted) as e:  # asked to stop after its 6th step
        _charlstm_run(tmp_path, "part", 12, stop=lambda: next(calls) >= 5)
    assert e.value.step == 6 and e.value.checkpoint.name == "ckpt-00000006.pt"
    resumed = _charlstm_run(tmp_path, "part", 12, resume=True)
    assert resumed.start_step == 6 and resumed.resumed_from == e.value.checkpoint
    for a, b in zip(
        full.job.model.state_dict().values(), resumed.job.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    sa, sb = capture(full.job, 12, {}), capture(resumed.job, 12, {})
    assert torch.equal(sa["rng"]["data"], sb["rng"]["data"])
    assert torch.equal(
        sa["optimizers"]["model"]["state"][0]["exp_avg"],
        sb["optimizers"]["model"]["state"][0]["exp_avg"],
    )


def test_existing_checkpoints_without_resume_are_an_error(tmp_path):
    _charlstm_run(tmp_path, "a", 4)
    with pytest.raises(CheckpointError, match="pass resume"):
        _charlstm_run(tmp_path, "a", 4)
