"""`aigc config` as a user runs it, in real processes: the digest of a resolved config is the
same in every process (hash randomization included) and for the same settings in any order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from aigc_core import families, settings

ROOT = Path(__file__).parents[3]


def aigc(*args: str, hash_seed: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return subprocess.run(
        [sys.executable, "-m", "aigc", "config", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONHASHSEED": hash_seed},
        cwd=ROOT,
    )


def test_the_digest_is_the_same_in_every_process(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  lr: 3e-4\n  seed: 2\nmodel:\n  z_dim: 50\n")
    show = ("show", "--model", "dcgan", "--preset", "smoke", "--json")
    a = aigc(*show, "--config", str(f), hash_seed="1")
    b = aigc(*show, "--set", "model.z_dim=50", "--set", "train.seed=2", "--set",
             "train.lr=0.0003", hash_seed="2")  # fmt: skip
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    digest = json.loads(a.stdout)["digest"]
    assert json.loads(b.stdout)["digest"] == digest
    here = settings.resolve(families.get("dcgan"), "smoke", settings.load_overrides(f))
    assert here.digest() == digest


def test_a_bad_setting_exits_2_before_anything_starts():
    p = aigc("show", "--model", "vae", "--preset", "smoke", "--set", "train.lr=0", hash_seed="0")
    assert p.returncode == 2, p.stderr
    assert "train.lr: Input should be greater than 0 (got 0)" in " ".join(p.stderr.split())
    assert p.stdout == "" and "Traceback" not in p.stderr
