"""`aigc train` as a user runs it: ingest a small text, train, SIGTERM, resume, warm start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from aigc_core.training.interrupt import EXIT_INTERRUPTED

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[3]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))}
    return {**e, "OMP_NUM_THREADS": "1"}


def aigc(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "aigc", *args, "--home", str(home)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT)


@pytest.fixture(scope="module")
def text_snapshot(tmp_path_factory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("home")
    corpus = home.parent / "corpus.txt"
    corpus.write_text(
        "\n\n".join(  # paragraphs: the documents of a text snapshot
            f"Line {i}: the cat sat on the mat and the dog sat on the log." for i in range(300)
        )
    )
    p = aigc("ingest", "--dataset", "cats", "--path", str(corpus), "--json", home=home)
    assert p.returncode == 0, p.stderr
    return home, json.loads(p.stdout)["snapshot_id"]


def test_train_sigterm_then_resume_auto_continues_the_same_run(text_snapshot):
    home, sid = text_snapshot
    cmd = [sys.executable, "-m", "aigc", "train", "--snapshot", sid, "--model", "charlstm"]
    cmd += ["--preset", "smoke", "--steps", "100000", "--home", str(home), "-v"]
    p = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT
    )
    deadline = time.monotonic() + 240
    while "step 5/" not in (line := p.stderr.readline()):  # smoke logs every 5 steps
        assert line and time.monotonic() < deadline, "training did not start"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == EXIT_INTERRUPTED, err
    assert "--resume auto" in err

    # a fresh start is refused while that run is unfinished
    again = aigc("train", "--snapshot", sid, "--model", "charlstm", "--preset", "smoke",
                 "--steps", "100000", home=home)  # fmt: skip
    assert again.returncode != 0 and "did not finish" in again.stderr

    # --resume auto picks the unfinished run up from the checkpoint SIGTERM wrote (the stored
    # config wins, so it would run on: stop it again once it says where it resumed)
    p2 = subprocess.Popen(cmd + ["--resume", "auto"], stderr=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT)  # fmt: skip
    resumed_line = ""
    while "resumed from" not in resumed_line:
        resumed_line = p2.stderr.readline()
        assert resumed_line, "no resume message"
    p2.send_signal(signal.SIGTERM)
    _, err2 = p2.communicate(timeout=120)
    assert p2.returncode == EXIT_INTERRUPTED, err2
    step = int(resumed_line.rsplit("at step", 1)[1])
    assert step >= 5
    # one MLflow run for both attempts: the resumed attempt continued the same run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("aigc-nightly")
    runs = client.search_runs([exp.experiment_id], "tags.`aigc.family` = 'charlstm'")
    assert len(runs) == 1


def test_train_json_logs_metrics_and_warm_start_names_its_parent(text_snapshot):
    home, sid = text_snapshot
    p = aigc("train", "--snapshot", sid, "--model", "transformer", "--preset", "smoke", "--json",
             home=home)  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["family"] == "transformer" and r["model_name"] == "aigc-transformer-cats"
    assert r["final_val_bpc"] > 0 and r["steps"] == 10 and r["resumed_from_step"] == 0
    assert (Path(r["model_dir"]) / "weights.safetensors").exists()
    assert sorted(p.name for p in Path(r["checkpoint_dir"]).glob("*.pt")) == ["ckpt-00000010.pt"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    history = client.get_metric_history(r["run_id"], "val_loss")
    assert [m.step for m in history] == [5, 10]
    assert client.get_run(r["run_id"]).data.params["device"] == "cpu"

    warm = aigc("train", "--snapshot", sid, "--model", "transformer", "--preset", "smoke",
                "--init-from", r["model_dir"], "--json", home=home)  # fmt: skip
    assert warm.returncode == 0, warm.stderr
    w = json.loads(warm.stdout)
    assert w["parent_model_uri"] == r["model_dir"] and w["run_id"] != r["run_id"]


def test_wrong_kind_and_unknown_model_are_clear_errors(text_snapshot):
    home, sid = text_snapshot
    p = aigc("train", "--snapshot", sid, "--model", "vae", "--preset", "smoke", home=home)
    assert p.returncode == 2 and "trains on image snapshots" in p.stderr
    assert "Traceback" not in p.stderr
    p = aigc("train", "--snapshot", sid, "--model", "gpt", home=home, timeout=60)
    assert p.returncode == 2 and "unknown model family 'gpt'" in p.stderr


@pytest.fixture
def image_home(tmp_path) -> tuple[Path, str]:
    """A home holding a small image snapshot, written directly (no ingest process)."""
    from aigc_core.data.snapshot import image_table, write_snapshot
    from aigc_core.paths import Home
    from tests.conftest import tiny_images

    home, data = tmp_path / "home", tiny_images(n=64)
    snap = write_snapshot(
        Home(home).ensure().datasets, "tiny", image_table(data), kind="image", source=data.source,
        params=data.params,
    )  # fmt: skip
    return home, snap.id


def test_failed_start_leaves_no_active_run_pointer(image_home, tmp_path):
    """Issue 13: `aigc train --model dcgan --steps 80` crashed after creating its run and left
    runs/active/*.json behind, so the next plain `aigc train` refused to start."""
    home, sid = image_home
    dcgan = ("train", "--snapshot", sid, "--model", "dcgan", "--preset", "smoke")
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    p = aigc(*dcgan, "--init-from", str(empty), home=home)  # fails once the run exists
    assert p.returncode == 1 and "FileNotFoundError" in p.stderr, p.stderr
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("aigc-nightly")
    [failed] = client.search_runs([exp.experiment_id])  # it failed after creating its run
    assert failed.info.status == "FAILED"
    assert not list(home.glob("runs/active/*.json"))

    # the next plain start is not blocked; --steps sets the DCGAN's length like any family's
    p = aigc(*dcgan, "--steps", "3", "--json", home=home)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["steps"] == 3 and Path(r["checkpoint_dir"], "ckpt-00000003.pt").exists()
    assert not list(home.glob("runs/active/*.json"))


def test_bad_steps_is_a_usage_error_before_anything_starts(image_home):
    home, sid = image_home
    p = aigc("train", "--snapshot", sid, "--model", "dcgan", "--steps", "0", home=home, timeout=60)
    assert p.returncode == 2 and "--steps" in p.stderr
    assert not (home / "mlflow.db").exists()
    p = aigc("train", "--snapshot", sid, "--set", "train.nosuch=1", home=home, timeout=60)
    assert p.returncode == 2 and "train.nosuch" in p.stderr
    assert not (home / "mlflow.db").exists()


def test_config_file_and_sets_choose_the_settings(image_home, tmp_path):
    """Preset, then --config, then --set, then --steps: the last word wins."""
    home, sid = image_home
    cfg = tmp_path / "run.yaml"
    cfg.write_text("train:\n  steps: 2\n  lr: 0.001\nmodel:\n  g_width: 8\n")
    dcgan = ("train", "--snapshot", sid, "--model", "dcgan", "--preset", "smoke", "--json")
    p = aigc(*dcgan, "--config", str(cfg), "--set", "train.steps=3", home=home)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["steps"] == 3
    p = aigc(*dcgan, "--config", str(cfg), "--set", "train.steps=3", "--steps", "4", home=home)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["steps"] == 4
