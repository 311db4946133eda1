"""The audio family through the stages `aigc train` and the nightly flow run, without a flow:
a folder of WAV files ingested behind its contract, the wavegan smoke preset trained by the
train task's body, evaluated by the family, registered as a pyfunc from code, and loaded back
from the registry (no unpickling) to answer a request with base64 WAV clips."""

from __future__ import annotations

import base64
import io

import mlflow
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
import soundfile
import torch

from aigc_core import families
from aigc_core.evaluation import audio_eval
from aigc_core.models.io import CONFIG, WEIGHTS, read_config
from aigc_core.training.runs import training_data
from tasks.data import ingest_gated
from tasks.evaluation import evaluate
from tasks.registry import register
from tasks.tracking import Tracker
from tasks.training import train_run

RATE, LENGTH = 8000, 1024
TONES = {"low": 330.0, "mid": 660.0, "high": 1320.0}  # one class per subfolder
PER_CLASS = 20


def write_tones(folder, seed: int = 0) -> None:
    """PER_CLASS recordings per class: a decaying tone with its own pitch jitter and phase,
    0.25 s at RATE, half as 16-bit PCM WAV and half as float WAV (the reader takes both)."""
    rng = np.random.default_rng(seed)
    t = np.arange(RATE // 4) / RATE
    for name, f0 in TONES.items():
        (folder / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            f = f0 * 2 ** (rng.uniform(-0.2, 0.2) / 12)
            x = 0.5 * np.exp(-4 * t) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
            subtype = "PCM_16" if i % 2 else "FLOAT"
            soundfile.write(folder / name / f"{i:02d}.wav", x, RATE, subtype=subtype)


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Ingest, train (smoke-conditional, a few steps), evaluate and register once."""
    from aigc_core.paths import Home

    root = tmp_path_factory.mktemp("audio")
    write_tones(root / "tones")
    home = Home(root / "home").ensure()
    with pytest.MonkeyPatch.context() as mp:
        # two shared CPU cores: fewer evaluator steps and generated clips than the defaults
        mp.setattr(audio_eval, "MIN_STEPS", 60)
        mp.setattr(audio_eval, "FAD_GENERATED", 200)
        snap, report = ingest_gated(
            home, "tones", path=root / "tones", sample_rate=RATE, clip_samples=LENGTH
        )
        trained = train_run(
            snap.ref(),
            "smoke",
            str(home.root),
            family="wavegan",
            config={"train": {"steps": 4, "log_every": 2}},
        )
        scores = evaluate.fn(trained, str(home.root))
        registered = register.fn(trained, scores, str(home.root))
    return home, snap, report, trained, scores, registered


def test_an_audio_snapshot_is_training_data_of_int16_clips_with_labels(stages):
    home, snap, report, *_ = stages
    assert report is not None and report.success
    assert snap.manifest["kind"] == "audio" and snap.manifest["sample_rate"] == RATE
    from aigc_core.data.snapshot import read_table

    data, counts = training_data(families.get("wavegan"), snap, read_table(snap))
    n_train, n_val = snap.manifest["splits"]["train"], snap.manifest["splits"]["validation"]
    assert counts == {"train_clips": n_train, "validation_clips": n_val}
    assert data.audio.shape == (n_train, 1, LENGTH) and data.audio.dtype == torch.int16
    assert data.val_audio.shape == (n_val, 1, LENGTH)
    assert data.sample_rate == RATE and data.num_classes == len(TONES)
    assert data.labels.dtype == torch.int64 and set(data.labels.tolist()) == {0, 1, 2}
    assert data.images is None and data.text is None
    # an empty validation split is allowed (the evaluator's contract demands one, not training)
    table = read_table(snap)
    train_only = table.filter(pc.equal(table.column("split"), "train"))
    data, counts = training_data(families.get("wavegan"), snap, train_only)
    assert data.val_audio is None and counts["validation_clips"] == 0 and len(data.audio) == n_train
    with pytest.raises(ValueError, match="the dcgan family trains on image snapshots; snapshot"):
        training_data(families.get("dcgan"), snap, read_table(snap))


def test_the_smoke_preset_trains_on_the_snapshots_rate_length_and_classes(stages):
    _, _, _, trained, _, _ = stages
    assert trained.family == "wavegan" and trained.steps == 4
    assert trained.model_name == "aigc-wavegan-tones"
    assert all(np.isfinite(v) for v in trained.final.values()) and trained.final
    cfg = read_config(f"{trained.model_dir}/{CONFIG}")
    assert (cfg["family"], cfg["length"], cfg["sample_rate"]) == ("wavegan", LENGTH, RATE)
    assert cfg["conditional"] and cfg["num_classes"] == len(TONES)


def test_the_family_evaluates_with_fad_beside_its_floor_and_the_evaluators_accuracy(stages):
    home, snap, _, trained, scores, _ = stages
    m = scores.metrics
    for key in ("fad", "fad_floor", "memorization_rate", "recognized_fraction", "label_accuracy"):
        assert np.isfinite(m[key]), key
    # pure tones three octaves apart: the evaluator tells them apart
    assert m["evaluator_accuracy"] >= 0.9
    assert m["fad_samples_generated"] == 200 and m["fad"] > m["fad_floor"] >= 0
    assert (home.evaluators / snap.id / WEIGHTS).exists()  # trained once, stored per snapshot
    logged = Tracker(home).run_metrics(trained.run_id)
    assert logged["fad"] == pytest.approx(m["fad"])


def test_the_registered_version_serves_base64_wav_without_unpickling(stages, mlflow_registry):
    home, _, _, trained, scores, registered = stages
    tracker = Tracker(home)
    version = tracker.get_version(registered.model_name, registered.version)
    assert version.tags["aigc.num_classes"] == str(len(TONES))
    assert float(version.tags["gate.fad"]) == pytest.approx(scores.metrics["fad"])
    assert tracker.alias_version(registered.model_name, "challenger").version == "1"

    mlflow_registry(home.tracking_uri)
    assert mlflow.get_tracking_uri() == home.tracking_uri
    model = mlflow.pyfunc.load_model(f"models:/{registered.model_name}/1")
    request = pd.DataFrame({"n": [3, 2], "seed": [7, 8]})
    out = model.predict(request, params={"labels": "2"})
    assert len(out) == 5 and out["request"].tolist() == [0, 0, 0, 1, 1]
    assert (out["label"] == 2).all() and (out["sample_rate"] == RATE).all()
    for b64 in out["wav_base64"]:
        clip, rate = soundfile.read(io.BytesIO(base64.b64decode(b64)), dtype="int16")
        info = soundfile.info(io.BytesIO(base64.b64decode(b64)))
        assert rate == RATE and clip.shape == (LENGTH,) and info.subtype == "PCM_16"
        assert info.channels == 1
    # the same request gives the same clips as the family's generator from the saved files
    gen = families.get("wavegan").load_generator(
        f"{trained.model_dir}/{WEIGHTS}", f"{trained.model_dir}/{CONFIG}"
    )
    local = gen.predict(request, {"labels": "2"})
    assert out["wav_base64"].tolist() == local["wav_base64"].tolist()
    # a label outside the model's classes is the request's error, naming the classes
    with pytest.raises(Exception, match="label 7 is out of range: the model knows classes 0..2"):
        model.predict(request, params={"labels": "7"})
