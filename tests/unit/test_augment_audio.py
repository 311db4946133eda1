"""Audio augmentation (issue 17): shape, dtype and range kept; nothing changes when off or at
probability 0; seeded by (seed, step); each transform does what it says (gain in dB, a shifted
click, noise at its SNR, a sine's pitch moved by its factor); the config's checks, pitch shift
refused on pitch-labelled data; the "cpu-augment" preset and `--set train.augment.*`; and a
WaveGAN job with augmentation on trains, resumes exactly and draws the same batches."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from aigc_core import families, settings
from aigc_core.training.augment import step_generator
from aigc_core.training.augment_audio import (
    PITCH_LIMIT_LABELLED,
    AudioAugmentConfig,
    AudioAugmenter,
    augment_clips,
    check_pitch_labels,
    draw,
)
from aigc_core.training.loop import capture, fit, restore
from aigc_core.training.wavegan import WaveGANJob, WaveGANTrainConfig, clips_tensor
from tests.unit.test_wavegan import TINY, tones

SR = 8000
OFF = dict(gain_p=0.0, shift_p=0.0, noise_p=0.0, pitch_p=0.0)
ALL = AudioAugmentConfig(
    enabled=True, gain_p=1.0, shift_p=1.0, noise_p=1.0, pitch_p=1.0, pitch_semitones=1.0
)


def only(**kw) -> AudioAugmentConfig:
    """Augmentation on with one transform, always taken."""
    return AudioAugmentConfig(enabled=True, **{**OFF, **kw})


def sines(n: int, length: int = 1024, amp: float = 0.2, seed: int = 0) -> torch.Tensor:
    """(n, 1, L) float32 sines of various frequencies and phases, peak `amp`."""
    return clips_tensor(tones(np.linspace(300, 1500, n), length, amp=amp, seed=seed))


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).square().mean(1).sqrt()


def test_shape_dtype_and_range_are_kept():
    x = sines(32, amp=0.99)  # near full scale: gain and noise must be limited
    y = augment_clips(x, ALL, step_generator(0, 1))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.abs().max() <= 1 and (y.abs().amax((1, 2)) == 1).any()  # limited to exactly 1
    assert not torch.equal(y, x)
    half = augment_clips(x.bfloat16(), ALL, step_generator(0, 1))
    assert half.dtype == torch.bfloat16 and half.abs().max() <= 1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as inside a bf16 training step
        assert torch.equal(augment_clips(x, ALL, step_generator(0, 1)), y)
    with pytest.raises(ValueError, match="\\(B, 1, L\\)"):
        augment_clips(x[:, 0], ALL, step_generator(0, 1))


def test_nothing_changes_when_off_or_at_probability_zero():
    x = sines(8)
    assert not AudioAugmentConfig().active  # off by default
    assert AudioAugmentConfig(enabled=True).active
    assert AudioAugmentConfig(enabled=True).pitch_semitones == 0  # pitch shift: off by default
    still = only(gain_p=1.0, gain_db=0.0, shift_p=1.0, shift=0.0, pitch_p=1.0)
    for cfg in (only(), still, dataclasses.replace(ALL, enabled=False)):
        assert not cfg.active
        aug = AudioAugmenter(cfg, seed=0)
        assert aug.generator(3) is None and aug(x, aug.generator(3)) is x
    # the function itself: clips that draw nothing come back as they were
    assert augment_clips(x, only(), step_generator(0, 1)) is x
    half = dataclasses.replace(ALL, gain_p=0.5, shift_p=0.0, noise_p=0.0, pitch_p=0.0)
    y = augment_clips(sines(400), half, step_generator(0, 1))
    kept = (y == sines(400)).flatten(1).all(1)
    assert abs(kept.float().mean().item() - 0.5) < 0.08  # each taken with its probability


def test_seeded_by_seed_and_step_and_different_per_clip():
    x = sines(1).repeat(16, 1, 1)
    aug = AudioAugmenter(ALL, seed=7)
    a, b = aug(x, aug.generator(5)), aug(x, aug.generator(5))
    assert torch.equal(a, b)  # the same (seed, step): the same clips, whatever ran before
    assert not torch.equal(a, aug(x, aug.generator(6)))
    other = AudioAugmenter(ALL, seed=8)
    assert not torch.equal(a, other(x, other.generator(5)))
    flat = a.flatten(1)  # 16 copies of one clip come out as 16 different clips
    assert (torch.cdist(flat, flat) + torch.eye(16) * 1e9).min() > 0.01
    # the draws of one transform do not depend on another's settings
    g1, g2 = (
        draw(64, 1024, ALL, step_generator(0, 1)),
        draw(64, 1024, only(gain_p=1.0), step_generator(0, 1)),
    )
    assert torch.equal(g1.gain_db, g2.gain_db)


def test_gain_changes_the_level_by_the_drawn_decibels():
    cfg = only(gain_p=1.0, gain_db=6.0)
    x = sines(200, amp=0.2)  # 14 dB of headroom: no clip is limited
    d = draw(200, 1024, cfg, step_generator(0, 1))
    y = augment_clips(x, cfg, step_generator(0, 1))
    measured = 20 * torch.log10(rms(y) / rms(x))
    torch.testing.assert_close(measured, d.gain_db, atol=1e-3, rtol=0)
    assert d.gain_db.min() < -5 and d.gain_db.max() > 5 and d.gain_db.abs().max() <= 6
    # a loud clip is limited: scaled as a whole to peak exactly 1, never clipped
    loud = sines(200, amp=0.9)
    z = augment_clips(loud, cfg, step_generator(0, 1))
    boosted = d.gain_db > 1  # +1 dB on a 0.9 peak passes full scale
    assert torch.equal(z[boosted].abs().amax((1, 2)), torch.ones(int(boosted.sum())))
    # one factor per clip, 1 / its peak: the waveform's shape is kept
    want = loud[boosted] / loud[boosted].abs().amax((1, 2), keepdim=True)
    torch.testing.assert_close(z[boosted], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["zero", "circular"])
def test_shift_moves_a_click_by_the_drawn_samples(mode):
    cfg = only(shift_p=1.0, shift=0.1, shift_mode=mode)
    x = torch.zeros(300, 1, 1024)
    x[:, 0, 1000] = 0.5  # a click near the end
    d = draw(300, 1024, cfg, step_generator(0, 1))
    y = augment_clips(x, cfg, step_generator(0, 1))[:, 0]
    assert d.shift.abs().max() <= 102  # 0.1 of 1024
    assert d.shift.max() > 80 and d.shift.min() < -80  # both ways
    target = 1000 + d.shift
    inside = target < 1024
    if mode == "circular":
        assert torch.equal(y.argmax(1), target % 1024)
        assert torch.equal(y.sum(1), torch.full((300,), 0.5))
    else:  # shifted past the end: gone, zeros came in
        assert torch.equal(y[inside].argmax(1), target[inside])
        assert (~inside).any() and torch.equal(y[~inside], torch.zeros_like(y[~inside]))
        assert torch.equal(y[inside].sum(1), torch.full((int(inside.sum()),), 0.5))


def test_noise_is_added_at_the_drawn_snr():
    cfg = only(noise_p=1.0, noise_snr_min=20.0, noise_snr_max=40.0)
    x = sines(200, length=4096, amp=0.1)
    d = draw(200, 4096, cfg, step_generator(0, 1))
    y = augment_clips(x, cfg, step_generator(0, 1))
    snr = 20 * torch.log10(rms(x) / rms(y - x))
    assert (snr - d.snr_db).abs().max() < 0.3  # 4096 noise samples: ~0.1 dB of spread
    assert 20 <= d.snr_db.min() < 22 and 38 < d.snr_db.max() <= 40


def test_pitch_shift_moves_a_sine_by_the_drawn_factor():
    cfg = only(pitch_p=1.0, pitch_semitones=1.0)
    x = clips_tensor(tones([500.0] * 100, length=4096, amp=0.5))  # bin 256 of 4096 at 8 kHz
    d = draw(100, 4096, cfg, step_generator(0, 1))
    y = augment_clips(x, cfg, step_generator(0, 1))[:, 0].numpy()
    peak = np.abs(np.fft.rfft(y * np.hanning(4096), axis=1)).argmax(1)
    expected = 256 * d.rate.numpy()
    assert np.abs(peak - expected).max() <= 1
    semis = 12 * np.log2(d.rate.numpy())
    assert semis.min() < -0.8 and semis.max() > 0.8 and np.abs(semis).max() <= 1
    # anchored at the start: an onset stays where it was
    click = torch.zeros(50, 1, 1024)
    click[:, 0, 0] = 0.5
    assert torch.equal(
        augment_clips(click, cfg, step_generator(0, 1))[:, 0, 0], torch.full((50,), 0.5)
    )


def test_config_is_checked():
    with pytest.raises(ValueError, match="noise_snr_min \\(40.0\\) must not exceed"):
        AudioAugmentConfig(noise_snr_min=40.0, noise_snr_max=20.0)
    for bad in (
        {"gain_db": -1.0},
        {"gain_db": 30.0},
        {"shift": 0.6},
        {"pitch_semitones": 3.0},  # beyond 2 semitones varispeed changes too much
        {"gain_p": 1.5},
        {"shift_mode": "reflect"},
        {"noise_snr_min": -5.0},
        {"flip": True},
    ):
        with pytest.raises(ValueError):
            AudioAugmentConfig(**bad)


def test_pitch_shift_is_refused_on_pitch_labelled_data():
    wide = only(pitch_p=1.0, pitch_semitones=1.0)
    with pytest.raises(ValueError, match="labels_are_pitch=false"):
        check_pitch_labels(wide, labelled=True)
    check_pitch_labels(wide, labelled=False)  # an unconditional model has no labels to change
    check_pitch_labels(dataclasses.replace(wide, labels_are_pitch=False), labelled=True)
    check_pitch_labels(dataclasses.replace(wide, pitch_semitones=PITCH_LIMIT_LABELLED), True)
    check_pitch_labels(dataclasses.replace(wide, enabled=False), labelled=True)
    # and the trainer checks it before training
    cfg = dataclasses.replace(TINY, conditional=True, num_classes=2)
    clips, labels = sines(4), torch.tensor([0, 1, 0, 1])
    train = WaveGANTrainConfig(batch_size=2, steps=1, bf16=False, augment=wide)
    with pytest.raises(ValueError, match="pitch_semitones=1.0 would shift labelled clips"):
        WaveGANJob(clips, cfg, train, torch.device("cpu"), labels)
    WaveGANJob(clips, TINY, train, torch.device("cpu"))  # unconditional: allowed


def test_augment_preset_and_settings():
    family = families.get("wavegan")
    base, augmented = family.preset("cpu"), family.preset("cpu-augment")
    assert not base.train.augment.enabled and augmented.train.augment.enabled
    assert augmented.train.augment.pitch_semitones == 0  # notes are labelled by pitch
    assert augmented.model == base.model
    assert dataclasses.replace(augmented.train, augment=base.train.augment) == base.train
    sets = ["train.augment.enabled=true", "train.augment.gain_db=3", "train.augment.shift_p=0"]
    r = settings.resolve(family, "cpu", settings.load_overrides(None, sets))
    assert r.train_cfg.augment == AudioAugmentConfig(enabled=True, gain_db=3.0, shift_p=0.0)
    with pytest.raises(settings.SettingsError, match="train.augment.degrees"):
        settings.resolve(family, "cpu", {"train": {"augment": {"degrees": 5.0}}})  # an image one


def _job(augment: bool, steps_cfg: dict) -> WaveGANJob:
    aug = dataclasses.replace(ALL, pitch_semitones=0.5, enabled=augment)
    train = WaveGANTrainConfig(
        batch_size=4, steps=4, log_every=2, bf16=False, augment=aug, **steps_cfg
    )
    return WaveGANJob(sines(16, amp=0.5), TINY, train, torch.device("cpu"))


@pytest.mark.parametrize(
    "steps_cfg",
    [{"penalty_every": 2}, {"loss": "wgan-gp", "d_steps": 2, "penalty": 10.0}],
    ids=["ns-r1", "wgan-gp"],
)
def test_training_with_augmentation_resumes_exactly(steps_cfg):
    full = _job(True, steps_cfg)
    assert full.augment.active
    history = fit(full, 4, log_every=2)
    assert all(math.isfinite(v) for m in history for v in m.values())
    part = _job(True, steps_cfg)
    fit(part, 2, log_every=2)
    state = capture(part, 2, {})
    resumed = _job(True, steps_cfg)
    fit(resumed, 4, start_step=restore(resumed, state), log_every=2)
    g_full, g_resumed = full.gan.generator.state_dict(), resumed.gan.generator.state_dict()
    for k, v in g_full.items():
        assert torch.equal(v, g_resumed[k]), k
    plain = _job(False, steps_cfg)
    fit(plain, 4, log_every=2)
    # augmentation changed what was learned, not which batches were drawn
    g_plain = plain.gan.generator.state_dict()
    assert any(not torch.equal(v, g_plain[k]) for k, v in g_full.items())
    assert torch.equal(full.rng.get_state(), plain.rng.get_state())
