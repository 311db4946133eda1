"""DDP: two CPU processes on gloo under torchrun train one model and its loss goes down."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def test_torchrun_two_cpu_processes_train_and_the_loss_goes_down(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. " * 100)
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "aigc_core.training.launch", "--family", "transformer", "--preset", "smoke",
        "--device", "cpu", "--threads", "1", "--text-file", str(corpus), "--out", str(out),
        "--set", "steps=40", "--set", "log_every=10", "--set", "checkpoint_every=20",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    summary = json.loads(lines[0])
    assert summary["world_size"] == 2
    assert "rank 1/2" in p.stderr and "gloo" in p.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    # rank 0 alone wrote checkpoints and the model, and the model is complete
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [
        "ckpt-00000020.pt",
        "ckpt-00000040.pt",
    ]
    assert "tok.weight" in load_file(str(out / "model" / "weights.safetensors"))
