"""The audio evaluator: log-mel features, training on a few pitches, the "none of these"
output, the cached store, and the generator scores (FAD against its floor, recognition,
memorization)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_core import audio
from aigc_core.evaluation.audio_eval import (
    AudioClassifierConfig,
    AudioSplits,
    audio_evaluator_in,
    audio_metrics,
    load_audio_classifier,
)

SR, L = 8000, 1024
PITCHES = (300.0, 600.0, 1200.0)


def notes(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sine and square-ish notes of 3 pitches with random phase, level, detuning and decay."""
    rng = np.random.default_rng(seed)
    t = np.arange(L) / SR
    clips, labels = [], []
    for c, f0 in enumerate(PITCHES):
        for _ in range(per_class):
            f = f0 * (1 + rng.uniform(-0.01, 0.01))
            ph = rng.uniform(0, 2 * np.pi)
            k = (1, 3, 5) if rng.random() < 0.5 else (1,)
            x = sum(np.sin(2 * np.pi * n * f * t + ph) / n for n in k)
            x = x * np.exp(-t * rng.uniform(0, 8))
            x = x / np.abs(x).max() * rng.uniform(0.2, 0.8)
            clips.append(np.round(x * 32767).astype(np.int16))
            labels.append(c)
    return np.stack(clips), np.array(labels, np.int64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x_tr, y_tr = notes(40, seed=0)
    x_va, y_va = notes(15, seed=1)
    splits = AudioSplits(x_tr, y_tr, x_va, y_va, ["low", "mid", "high"], SR)
    folder = tmp_path_factory.mktemp("evaluators") / "snap"
    model, metrics = audio_evaluator_in(folder, lambda: splits)
    return model, metrics, splits, folder


def test_log_mel_and_spectrogram_png():
    x = torch.from_numpy(audio.as_float(notes(1, 0)[0]))
    db = audio.log_mel(x, SR)
    assert db.shape == (3, audio.N_MELS, L // 64 + 1)
    # 80 dB floor below each clip's maximum
    assert torch.allclose(db.amax((1, 2)) - db.amin((1, 2)), torch.full((3,), 80.0), atol=1e-3)
    # the 300 Hz clip's loudest band lies below the 1200 Hz clip's
    assert db[0].mean(1).argmax() < db[2].mean(1).argmax()
    png = audio.spectrogram_png(x[0].numpy(), SR)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (192, 96) and img.mode == "RGB"


def test_evaluator_learns_pitch_and_rejects_noise(trained):
    model, metrics, splits, _ = trained
    assert metrics["accuracy"] >= 0.9
    assert metrics["validation_clips"] == 45 and metrics["train_clips"] == 120
    _, p_real = model.embed(splits.x_val)
    noise = np.random.default_rng(2).normal(0, 0.3, (20, L)).astype(np.float32)
    _, p_noise = model.embed(noise)
    assert p_real.shape == (45, 3)
    assert np.median(p_real.max(1)) > 0.8
    assert p_noise.max(1).mean() < 0.5  # "none of these" takes the mass


def test_evaluator_is_trained_once_per_folder(trained):
    model, metrics, splits, folder = trained

    def must_not_train():
        raise AssertionError("the stored evaluator should be reused")

    again, metrics2 = audio_evaluator_in(folder, must_not_train)
    assert metrics2 == metrics
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    assert load_audio_classifier(folder).cfg == AudioClassifierConfig(3, SR, L)


def test_metrics_rank_real_above_noise_and_catch_copies(trained):
    model, _, splits, _ = trained
    new_real, _ = notes(20, seed=3)  # unseen clips of the same kind
    noise = np.random.default_rng(4).normal(0, 0.3, (60, L)).astype(np.float32)
    real_m = audio_metrics(model, audio.as_float(new_real), splits.x_train, splits.x_val)
    noise_m = audio_metrics(model, noise, splits.x_train, splits.x_val)
    copy_m = audio_metrics(model, audio.as_float(splits.x_train[:60]), splits.x_train, splits.x_val)
    assert real_m["fad"] < noise_m["fad"] / 10
    assert real_m["fad_floor"] == noise_m["fad_floor"]
    assert real_m["recognized_fraction"] > 0.7 > 0.1 > noise_m["recognized_fraction"]
    assert real_m["classes_covered"] == 3 and real_m["class_diversity"] > 2
    assert copy_m["memorization_rate"] > 0.9 > 0.2 > real_m["memorization_rate"]
    assert copy_m["nn_distance_ratio"] < 0.01 < real_m["nn_distance_ratio"]
    right = audio_metrics(model, splits.x_val, splits.x_train, splits.x_val, splits.y_val)
    wrong = audio_metrics(model, splits.x_val, splits.x_train, splits.x_val, (splits.y_val + 1) % 3)
    assert right["label_accuracy"] > 0.9 > 0.1 > wrong["label_accuracy"]
    assert "label_accuracy" not in real_m


def test_evaluate_audio_scores_a_saved_generator(trained, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from aigc_core.evaluation import audio_eval
    from aigc_core.generation.audio import AudioGenerator
    from aigc_core.models.wavegan import Generator, WaveGANConfig

    _, metrics, splits, folder = trained
    monkeypatch.setattr(audio_eval, "FAD_GENERATED", 40)
    inputs = SimpleNamespace(evaluators_dir=folder.parent, snapshot_id=folder.name)
    torch.manual_seed(0)
    gen = AudioGenerator(
        Generator(WaveGANConfig(z_dim=8, width=4, length=L, kernel=9, sample_rate=SR))
    )
    result = audio_eval.evaluate_audio(inputs, gen, lambda: splits)
    assert result.metrics["evaluator_accuracy"] == metrics["accuracy"]
    assert result.metrics["fad_samples_generated"] == 40
    assert result.metrics["fad"] > 10 * result.metrics["fad_floor"]  # an untrained generator
    assert result.images["spectrograms.png"].size == (4 * 196 + 4, 4 * 100 + 4)
    assert result.summary.startswith("FAD ")
    wrong = AudioGenerator(
        Generator(WaveGANConfig(z_dim=8, width=4, length=L, kernel=9, sample_rate=16000))
    )
    with pytest.raises(ValueError, match="16000 Hz but snapshot"):
        audio_eval.evaluate_audio(inputs, wrong, lambda: splits)
    conditional = WaveGANConfig(
        z_dim=8, width=4, length=L, kernel=9, sample_rate=SR, conditional=True, num_classes=3
    )
    result = audio_eval.evaluate_audio(
        inputs, AudioGenerator(Generator(conditional)), lambda: splits
    )
    assert 0 <= result.metrics["label_accuracy"] <= 1
