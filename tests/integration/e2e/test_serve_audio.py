"""An audio champion as users reach it: a tiny conditional WaveGAN generator registered through
the register task and promoted, then `mlflow models serve -m models:/NAME@champion` (local env,
127.0.0.1) answering /invocations with base64 WAV clips of the model's rate and length, the
asked class on each row, the same clips as the in-process model; a label the model does not
know is a 400 naming it."""

from __future__ import annotations

import base64
import io

import pandas as pd
import pytest
import soundfile
import torch

from aigc_core.models.io import save_model
from aigc_core.models.wavegan import Generator, WaveGANConfig
from aigc_core.stages import Scores, SnapshotRef, TrainedRun
from tasks.registry import promote_version, register
from tasks.tracking import Tracker
from tests.integration.e2e.serving import invoke, model_server
from tests.integration.e2e.test_serve import ROOT, clean_env

pytestmark = pytest.mark.slow
NAME = "aigc-wavegan-tones"
RATE, LENGTH, CLASSES = 8000, 1024, 3
GATE_METRICS = {"fad": 50.0, "fad_floor": 2.0, "evaluator_accuracy": 0.95, "memorization_rate": 0}


@pytest.fixture
def audio_champion(home):
    """A tiny conditional WaveGAN generator registered by the register task, champion."""
    tracker = Tracker(home)
    torch.manual_seed(0)
    cfg = WaveGANConfig(
        z_dim=8, width=4, kernel=9, length=LENGTH, sample_rate=RATE, conditional=True,
        num_classes=CLASSES,
    )  # fmt: skip
    run_id = tracker.start_run("test", tags={})
    model_dir = home.runs / run_id / "model"
    save_model(model_dir, Generator(cfg), cfg.to_dict())
    trained = TrainedRun(
        run_id=run_id,
        snapshot=SnapshotRef("snap-audio", "tones", "audio", str(home.datasets), 60, False),
        family="wavegan",
        model_name=NAME,
        model_dir=str(model_dir),
        checkpoint_dir=str(home.runs / run_id / "checkpoints"),
        preset="test",
        device="cpu",
        steps=1,
        resumed_from_step=0,
    )
    registered = register.fn(trained, Scores(run_id, GATE_METRICS), str(home.root))
    assert promote_version(home, NAME, registered.version).promoted
    return home, registered


def decode(b64: str) -> tuple:
    data = base64.b64decode(b64)
    clip, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    return clip, rate, soundfile.info(io.BytesIO(data))


def test_the_served_audio_champion_answers_wav_clips_over_http(audio_champion):
    home, registered = audio_champion
    assert Tracker(home).get_version(NAME, registered.version).tags["aigc.num_classes"] == "3"
    env = {**clean_env(home.root), "MLFLOW_TRACKING_URI": home.tracking_uri}
    columns = ["n", "seed"]
    with model_server(f"models:/{NAME}@champion", env, ROOT) as base:
        body = {"dataframe_split": {"columns": columns, "data": [[3, 7], [2, 8]]}}
        status, answer = invoke(base, {**body, "params": {"labels": "1"}})
        bad_status, bad = invoke(base, {**body, "params": {"labels": "5"}})
    assert status == 200, answer
    rows = answer["predictions"]
    assert [r["request"] for r in rows] == [0, 0, 0, 1, 1]
    assert all(r["label"] == 1 and r["sample_rate"] == RATE for r in rows)
    for r in rows:
        clip, rate, info = decode(r["wav_base64"])
        assert clip.shape == (LENGTH,) and rate == RATE
        assert info.channels == 1 and info.subtype == "PCM_16"
        assert r["num_samples"] == LENGTH
    # the same request gives the same clips as the registered model in-process
    model = Tracker(home).load_model(f"models:/{NAME}@champion")
    local = model.predict(None, pd.DataFrame({"n": [3], "seed": [7]}), {"labels": "1"})
    assert [r["wav_base64"] for r in rows[:3]] == local["wav_base64"].tolist()
    # a class the model does not know: the request's error, with the reason
    assert bad_status == 400, bad
    assert "label 5 is out of range: the model knows classes 0..2" in bad["message"]
