"""WaveGAN: shapes, phase shuffle, the training job (both losses, resumable), the audio
generator and its pyfunc response, and the audio helpers (WAV bytes, level statistics)."""

from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from aigc_core import audio
from aigc_core.families.wavegan import PRESETS
from aigc_core.generation.audio import AudioGenerator, load_generator
from aigc_core.models.io import save_model
from aigc_core.models.wavegan import (
    Discriminator,
    Generator,
    WaveGANConfig,
    phase_shuffle,
    upsampling_layers,
)
from aigc_core.training.loop import capture, fit, restore
from aigc_core.training.wavegan import WaveGANJob, WaveGANTrainConfig, clips_tensor

SR = 8000


def tones(freqs, length=1024, sr=SR, amp=0.5, seed=0) -> np.ndarray:
    """(N, L) int16 sine clips, one per frequency, random start phase."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sr
    x = [amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs]
    return np.round(np.stack(x) * 32767).astype(np.int16)


TINY = WaveGANConfig(z_dim=8, width=4, length=1024, kernel=9, sample_rate=SR)


@pytest.mark.parametrize("length,kernel", [(1024, 9), (4096, 25), (4096, 8), (256, 4)])
def test_shapes(length, kernel):
    cfg = WaveGANConfig(z_dim=8, width=4, length=length, kernel=kernel)
    x = Generator(cfg)(torch.randn(3, 8))
    assert x.shape == (3, 1, length)
    assert x.abs().max() <= 1
    assert Discriminator(cfg)(x).shape == (3, 1)


def test_lengths_must_be_16_times_a_power_of_4():
    assert upsampling_layers(16384) == 5
    assert upsampling_layers(4096) == 4
    for bad in (16, 1000, 2048, 8192):
        with pytest.raises(ValueError, match="16 \\* 4\\*\\*k"):
            WaveGANConfig(length=bad)
    with pytest.raises(ValueError, match="conditional"):
        WaveGANConfig(conditional=False, num_classes=3)
    assert TINY.to_dict()["family"] == "wavegan"


def test_phase_shuffle_shifts_each_example_within_n():
    x = torch.arange(40.0).repeat(6, 3, 1)  # (6, 3, 40)
    y = phase_shuffle(x, 2)
    assert y.shape == x.shape
    # every example is x shifted by one s in [-2, 2], the same for all its channels
    for b in range(6):
        shifts = {int(y[b, c, 10] - x[b, c, 10]) for c in range(3)}
        assert len(shifts) == 1 and abs(shifts.pop()) <= 2
        s = int(y[b, 0, 10] - 10)
        assert torch.equal(y[b, :, 5:35], x[b, :, 5 + s : 35 + s])
    assert torch.equal(phase_shuffle(x, 0), x)


def test_conditional_modules_need_labels():
    cfg = dataclasses.replace(TINY, conditional=True, num_classes=3)
    g, d = Generator(cfg), Discriminator(cfg)
    y = torch.tensor([0, 1, 2])
    assert d(g(torch.randn(3, 8), y), y).shape == (3, 1)
    with pytest.raises(ValueError, match="pass labels"):
        g(torch.randn(3, 8))


def _job(loss: str, steps: int = 4, **kw) -> WaveGANJob:
    clips = clips_tensor(tones(np.linspace(200, 1200, 16)))
    extra = {"d_steps": 2, "penalty": 10.0, "penalty_every": 1} if loss == "wgan-gp" else {}
    train = WaveGANTrainConfig(
        batch_size=4, steps=steps, log_every=2, loss=loss, bf16=False, **extra, **kw
    )
    return WaveGANJob(clips, TINY, train, torch.device("cpu"))


@pytest.mark.parametrize("loss", ["ns-r1", "wgan-gp"])
def test_training_steps_are_finite_and_penalised(loss):
    job = _job(loss, penalty_every=2) if loss == "ns-r1" else _job(loss)
    history = fit(job, 4, log_every=2)
    assert len(history) == 2
    for m in history:
        assert all(np.isfinite(v) for v in m.values())
        assert m["penalty"] > 0  # R1 every 2nd step here, WGAN-GP every step


def test_resumed_training_repeats_the_uninterrupted_run():
    a = _job("ns-r1", penalty_every=2)
    fit(a, 4, log_every=2)
    b = _job("ns-r1", penalty_every=2)
    fit(b, 2, log_every=2)
    state = capture(b, 2, {})
    c = _job("ns-r1", penalty_every=2)
    start = restore(c, state)
    fit(c, 4, start_step=start, log_every=2)
    for k, v in a.gan.generator.state_dict().items():
        assert torch.equal(v, c.gan.generator.state_dict()[k]), k


def test_int16_clips_train_as_their_floats():
    pcm = torch.from_numpy(tones(np.linspace(200, 1200, 16)))[:, None]  # (N, 1, L) int16
    train = WaveGANTrainConfig(batch_size=4, steps=2, bf16=False)
    a = WaveGANJob(pcm, TINY, train, torch.device("cpu"))
    assert a.data.dtype == torch.int16
    fit(a, 2, log_every=2)
    b = WaveGANJob(pcm.float() / 32768, TINY, train, torch.device("cpu"))  # seeds torch anew
    fit(b, 2, log_every=2)
    for k, v in a.gan.generator.state_dict().items():
        assert torch.equal(v, b.gan.generator.state_dict()[k]), k


def test_bad_clips_are_refused():
    with pytest.raises(ValueError, match="clips must be"):
        WaveGANJob(torch.zeros(4, 1, 4096), TINY, WaveGANTrainConfig(), torch.device("cpu"))
    with pytest.raises(ValueError, match="int16 PCM, got torch.int32"):
        WaveGANJob(torch.zeros(4, 1, 1024, dtype=torch.int32), TINY, WaveGANTrainConfig(), "cpu")
    with pytest.raises(ValueError, match="int16"):
        clips_tensor(np.zeros((2, 1024), np.float32))


def test_presets_are_consistent():
    for name, (model, train) in PRESETS.items():
        assert model.length == 4096 and model.sample_rate == 8000, name
        assert train.total_steps >= 1
    assert PRESETS["gpu"][1].loss == "wgan-gp" and PRESETS["gpu"][0].kernel == 25
    assert all(model.conditional for model, _ in PRESETS.values())  # when the data has labels


def test_short_training_moves_the_generator_towards_the_tone():
    """~10 s: on clips of one 1 kHz tone, 120 steps move a large share of the generated clips'
    spectral power near 1 kHz, where the untrained generator has almost none."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    clips = clips_tensor(tones([1000.0] * 64, seed=1))
    model = WaveGANConfig(z_dim=8, width=8, length=1024, kernel=9, sample_rate=SR)
    train = WaveGANTrainConfig(batch_size=16, steps=120, lr=1e-3, bf16=False)
    job = WaveGANJob(clips, model, train, torch.device("cpu"))

    def near_tone(x: np.ndarray) -> float:  # share of spectral power within 1 kHz +- 150 Hz
        p = np.abs(np.fft.rfft(x, axis=1)) ** 2
        f = np.fft.rfftfreq(x.shape[1], 1 / SR)
        return float((p[:, np.abs(f - 1000) < 150].sum(1) / p.sum(1)).mean())

    before = near_tone(job.sample(32))
    fit(job, train.steps, log_every=60)
    after = near_tone(job.sample(32))
    assert near_tone(clips[:, 0].numpy()) > 0.95
    assert after > 0.25 > 0.05 > before, (before, after)  # seen: 0.001 -> 0.47


def _saved(tmp_path, cfg=TINY) -> AudioGenerator:
    torch.manual_seed(0)
    paths = save_model(tmp_path, Generator(cfg), cfg.to_dict())
    import json

    return load_generator(paths["weights"], json.loads(paths["config"].read_text()))


def test_generation_is_seeded_and_batch_size_independent(tmp_path):
    gen = _saved(tmp_path)
    a = gen.generate(10, seed=3, batch_size=3)
    b = gen.generate(10, seed=3, batch_size=10)
    assert a.shape == (10, 1024) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-2)  # bf16 on some CPUs: batch sizes round alike
    assert not np.allclose(a, gen.generate(10, seed=4), atol=1e-3)
    assert np.abs(a).max() <= 1


def test_predict_returns_wav_files(tmp_path):
    gen = _saved(tmp_path)
    out = gen.predict(pd.DataFrame({"n": [2, 1], "seed": [0, 1]}))
    assert list(out.columns) == [
        "request",
        "index",
        "seed",
        "label",
        "sample_rate",
        "num_samples",
        "wav_base64",
    ]
    assert out["request"].tolist() == [0, 0, 1] and out["label"].tolist() == [-1] * 3
    data, sr = soundfile.read(io.BytesIO(base64.b64decode(out["wav_base64"][0])), dtype="float32")
    assert sr == SR and data.shape == (1024,)
    np.testing.assert_allclose(data, gen.generate(2, seed=0)[0], atol=2e-4)
    with pytest.raises(ValueError, match="n must lie"):
        gen.predict(pd.DataFrame({"n": [0], "seed": [0]}))
    with pytest.raises(ValueError, match="unconditional"):
        gen.predict(pd.DataFrame({"n": [1], "seed": [0]}), {"labels": "1"})


def test_conditional_generator_honours_labels(tmp_path):
    cfg = dataclasses.replace(TINY, conditional=True, num_classes=3)
    gen = _saved(tmp_path, cfg)
    out = gen.predict(pd.DataFrame({"n": [4], "seed": [0]}), {"labels": "2"})
    assert out["label"].tolist() == [2, 2, 2, 2]


def test_wav_bytes_round_trip():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], dtype=np.float32)
    data, sr = soundfile.read(io.BytesIO(audio.to_wav_bytes(x, 16000)), dtype="int16")
    assert sr == 16000
    assert data.tolist() == [0, 16384, -16384, 32767, -32767, 32767]  # clipped at full scale
    with pytest.raises(ValueError, match="\\(L,\\)"):
        audio.to_wav_bytes(np.zeros((2, 4)), 8000)


def test_level_statistics():
    t = tones([440.0], length=4096)
    silent = np.zeros((1, 4096), np.int16)
    half = t.copy()
    half[0, 2048:] = 0
    clipped = np.clip(t.astype(np.int32) * 4, -32768, 32767).astype(np.int16)
    batch = np.concatenate([t, silent, half, clipped])
    np.testing.assert_allclose(audio.silence_fraction(batch), [0, 1, 0.5, 0])
    assert audio.clipping_fraction(batch)[3] > 0.5 and audio.clipping_fraction(batch)[0] == 0
    np.testing.assert_allclose(audio.peak(batch)[:2], [0.5, 0], atol=1e-4)
    assert abs(audio.dc_offset(t)[0]) < 0.01
    assert audio.dc_offset(np.full((1, 8), 0.25, np.float32))[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="int16 PCM or floats"):
        audio.peak(np.zeros((1, 4), np.int32))
