"""Data augmentation of the audio trainer: random gain, time shift, additive noise and a small
pitch shift of waveform clips, batched on the device, seeded per step (issue 17).

WaveGAN augments the real clips its discriminator sees, as the DCGAN its real images
(`aigc_core.training.gan`): D learns that augmented clips are real too, which is what keeps a
discriminator from memorising a small data set, and also what lets the augmentations "leak"
into what G draws (Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data"). So every transform is one a real recording of the same class could show, and each is
small. One call transforms a batch (B, 1, L), each clip with its own draws; each transform is
taken with its own probability (`*_p`), independently:

- time shift (`shift`, a fraction of the clip): the clip moves by a random whole number of
  samples, with zeros coming in (`shift_mode="zero"`: a note that starts later, or a recording
  cut after its onset) or what leaves one end coming in at the other (`"circular"`, for clips
  with no onset, e.g. steady tones; it puts a note's tail before its attack);
- pitch shift (`pitch_semitones`): the clip is resampled by a factor r = 2**(k/12), k uniform in
  [-pitch_semitones, pitch_semitones]: y(t) = x(r t), by linear interpolation, anchored at the
  start (an onset stays where it is) and cut or zero-padded at the end to the clip's length.
  This is varispeed, not a phase vocoder: duration and envelope shrink or stretch by r too
  (2 semitones: 12%), and the spectral envelope (formants, the timbre) moves with the pitch.
  Acceptable at the factors allowed (at most 2 semitones; off by default): notes' envelopes and
  lengths vary more than that from one note to the next, and a real phase vocoder would bring a
  dependency (torchaudio) and artifacts of its own (phasiness, smeared attacks). Linear
  interpolation also dulls the top of the band: its power response averaged over the fractional
  offsets is (2 + cos w) / 3, -1.8 dB at a quarter of the sample rate and -4.6 dB at 45% of it
  (-16 dB there at an offset of half a sample); and at r > 1 a partial above (sample rate / 2)
  / r aliases: `notes` keeps its partials under 45% of the rate, safe up to 1.8 semitones;
- additive white Gaussian noise at a signal-to-noise ratio uniform in [noise_snr_min,
  noise_snr_max] dB, relative to the clip's RMS over its whole length (silence included);
- gain, uniform in [-gain_db, gain_db] dB, last, followed by a peak limit: a clip whose peak
  would pass full scale is scaled down as a whole to peak 1. Neither a clamp (hard clipping,
  which the audio curation rejects above 0.1% of samples and which G would learn to imitate) nor
  a soft limiter (tanh: a waveshaper, new harmonics, a different timbre): one more gain per clip,
  so the waveform's shape is untouched. Loud clips therefore get less than their drawn boost.
  The limit also catches the few clips that noise pushed past full scale, so every clip that
  any transform touched ends in [-1, 1] (clips that drew no transform are returned as they are).

Pitch shift and pitch labels: a conditional model on pitch-labelled clips (the built-in `notes`
set is labelled by pitch class, with classes a semitone apart) would learn from a note shifted
by half a semitone or more a note of the wrong class. So pitch shift is off by default (also in
the "cpu-augment" preset), and `labels_are_pitch` (default True) states what the labels mean:
while it is set, a trainer with labels refuses `pitch_semitones` above `PITCH_LIMIT_LABELLED`
(0.25: 25 cents; `notes` detunes its own notes by up to 16 cents, so a shifted note stays
nearer its own pitch class than a neighbour's), `check_pitch_labels`. Set it false for labels
that a pitch shift does not change (an instrument, a word, a speaker) to allow up to 2
semitones; an unconditional model has no labels to change.

Reproducible on resume as the image augmentation is (`aigc_core.training.augment`): the draws
of step `s` come from `step_generator(seed + 1000 * rank, s)`, on the CPU (the same draws on any
device); a step that trains D on several batches (WGAN-GP's `d_steps`) draws them all from its
one generator, in order. The trainer's own generator (batches, latents) and torch's global one
(phase shuffle) are untouched, so the batches drawn are the same with augmentation on or off.
"""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from pydantic.dataclasses import dataclass

from aigc_core.config_types import CONFIG, Bool, Probability
from aigc_core.training.augment import step_generator

PITCH_LIMIT_LABELLED = 0.25  # semitones: the most a pitch-labelled clip may be shifted
PITCH_LIMIT = 2.0  # semitones, any clip: beyond it varispeed changes duration and timbre too much

Decibels = Annotated[float, Field(strict=True, ge=0, le=100)]


@dataclass(frozen=True, config=CONFIG)
class AudioAugmentConfig:
    """Augmentation of the real clips WaveGAN's discriminator sees (`train.augment.*`); off by
    default. A transform with probability 0 or strength 0 is off."""

    enabled: Bool = False
    """augment the real clips (the "cpu-augment" preset turns it on)"""
    gain_db: Annotated[float, Field(strict=True, ge=0, le=20)] = 6.0
    """gain: uniform in [-gain_db, gain_db] dB, then limited so the peak stays at most 1"""
    gain_p: Probability = 0.5
    """probability that a clip gets a random gain, drawn independently of the others"""
    shift: Annotated[float, Field(strict=True, ge=0, le=0.5)] = 0.1
    """time shift: uniform in [-shift, shift] of the clip's length, in whole samples"""
    shift_mode: Literal["zero", "circular"] = "zero"
    """what comes in at the end a shift leaves: zeros, or what left at the other end"""
    shift_p: Probability = 0.5
    """probability that a clip gets a time shift, drawn independently of the others"""
    noise_snr_min: Decibels = 20.0
    """additive white noise: signal-to-noise ratio uniform in [min, max] dB of the clip's RMS"""
    noise_snr_max: Decibels = 40.0
    noise_p: Probability = 0.5
    """probability that a clip gets added noise, drawn independently of the others"""
    pitch_semitones: Annotated[float, Field(strict=True, ge=0, le=PITCH_LIMIT)] = 0.0
    """pitch shift (varispeed): uniform in [-pitch_semitones, pitch_semitones]; 0: off"""
    pitch_p: Probability = 0.5
    """probability that a clip gets a pitch shift, drawn independently of the others"""
    labels_are_pitch: Bool = True
    """a conditional model's labels are pitches (as `notes`' pitch classes): a pitch shift
    then may not exceed 0.25 semitone; false: labels that pitch does not change"""

    def __post_init__(self):
        if self.noise_snr_min > self.noise_snr_max:
            raise ValueError(
                f"noise_snr_min ({self.noise_snr_min}) must not exceed noise_snr_max "
                f"({self.noise_snr_max})"
            )

    @property
    def gain(self) -> bool:
        return self.gain_p > 0 and self.gain_db > 0

    @property
    def shifts(self) -> bool:
        return self.shift_p > 0 and self.shift > 0

    @property
    def noise(self) -> bool:
        return self.noise_p > 0

    @property
    def pitch(self) -> bool:
        return self.pitch_p > 0 and self.pitch_semitones > 0

    @property
    def active(self) -> bool:
        """Whether augmentation changes anything: on, with a transform that can be drawn."""
        return self.enabled and (self.gain or self.shifts or self.noise or self.pitch)


def check_pitch_labels(cfg: AudioAugmentConfig, labelled: bool) -> None:
    """Refuse a pitch shift that could move a pitch-labelled clip into another class."""
    shifts_pitch = cfg.active and cfg.pitch and cfg.pitch_semitones > PITCH_LIMIT_LABELLED
    if labelled and cfg.labels_are_pitch and shifts_pitch:
        raise ValueError(
            f"train.augment.pitch_semitones={cfg.pitch_semitones} would shift labelled clips "
            f"by up to {cfg.pitch_semitones} semitone(s), changing a pitch label (the `notes` "
            f"set's classes are a semitone apart): use at most {PITCH_LIMIT_LABELLED}, or set "
            "train.augment.labels_are_pitch=false if the labels do not name pitches"
        )


class AudioDraws(NamedTuple):
    """One batch's random parameters, (B,) each; the neutral value where a clip did not draw
    that transform."""

    gain_db: torch.Tensor  # 0
    shift: torch.Tensor  # int64 samples, positive: later; 0
    snr_db: torch.Tensor  # inf
    rate: torch.Tensor  # the pitch factor 2**(semitones/12); 1

    @property
    def touched(self) -> torch.Tensor:
        """(B,) bool: the clips that drew at least one transform."""
        return (self.gain_db != 0) | (self.shift != 0) | self.snr_db.isfinite() | (self.rate != 1)


def draw(b: int, length: int, cfg: AudioAugmentConfig, generator: torch.Generator) -> AudioDraws:
    """The parameters of `b` clips of `length` samples (on the CPU), from `generator`: eight
    uniforms per clip (four coins, four values), whatever the config, so changing one
    transform's setting does not change another's draws."""
    u = torch.rand(b, 8, generator=generator, dtype=torch.float64)  # (B, 8)
    coin = u[:, :4] < torch.tensor([cfg.gain_p, cfg.shift_p, cfg.noise_p, cfg.pitch_p])
    zero = torch.zeros(b, dtype=torch.float64)
    gain_db = torch.where(coin[:, 0], (2 * u[:, 4] - 1) * cfg.gain_db, zero)
    most = int(cfg.shift * length)  # a whole number of samples in [-most, most], uniform
    shift = torch.where(coin[:, 1], (u[:, 5] * (2 * most + 1)).floor() - most, zero).long()
    snr = cfg.noise_snr_min + u[:, 6] * (cfg.noise_snr_max - cfg.noise_snr_min)
    snr_db = torch.where(coin[:, 2], snr, torch.full_like(zero, torch.inf))
    semitones = (2 * u[:, 7] - 1) * cfg.pitch_semitones
    rate = torch.where(coin[:, 3], 2 ** (semitones / 12), zero + 1)
    return AudioDraws(gain_db.float(), shift, snr_db.float(), rate.float())


class AudioAugmenter:
    """A trainer's audio augmentation: `augmenter.generator(step)` is the step's generator,
    `augmenter(clips, generator)` the batch augmented with draws from it (the batch itself
    when augmentation is off)."""

    def __init__(self, cfg: AudioAugmentConfig | None, seed: int):
        """cfg: the train config's `augment` (None: off); seed: the trainer's seed and rank
        (`train_cfg.seed + 1000 * rank`, as its data generator's)."""
        self.cfg = cfg if cfg is not None else AudioAugmentConfig()
        self.seed = seed

    @classmethod
    def of(cls, train_cfg, rank: int = 0) -> AudioAugmenter:
        return cls(getattr(train_cfg, "augment", None), train_cfg.seed + 1000 * rank)

    @property
    def active(self) -> bool:
        return self.cfg.active

    def generator(self, step: int) -> torch.Generator | None:
        """The CPU generator of `step`'s draws (None when augmentation is off)."""
        return step_generator(self.seed, step) if self.cfg.active else None

    def __call__(self, clips: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None or not self.cfg.active:
            return clips
        return augment_clips(clips, self.cfg, generator)


def augment_clips(
    clips: torch.Tensor, cfg: AudioAugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """`clips` (B, 1, L), float, any device, each transformed with its own draws (`cfg.enabled`
    is the caller's to check). Clips that draw no transform are returned untouched, the others
    end in [-1, 1]; the dtype is kept. Computed in float32 with autocast off."""
    if clips.ndim != 3 or clips.shape[1] != 1 or not clips.is_floating_point():
        raise ValueError(
            f"augment_clips takes a float batch (B, 1, L), got {tuple(clips.shape)} {clips.dtype}"
        )
    b, _, length = clips.shape
    draws = draw(b, length, cfg, generator)
    if not bool(draws.touched.any()):
        return clips
    noise = None
    if bool(draws.snr_db.isfinite().any()):
        noise = torch.randn(b, length, generator=generator)  # (B, L), drawn on the CPU
    with torch.autocast(clips.device.type, enabled=False):
        out = apply(clips[:, 0].float(), draws, noise, cfg.shift_mode == "circular")
    keep = ~draws.touched.to(clips.device)[:, None]  # (B, 1): these stay exactly as they were
    return torch.where(keep, clips[:, 0], out.to(clips.dtype))[:, None]


def apply(
    x: torch.Tensor, draws: AudioDraws, noise: torch.Tensor | None, circular: bool
) -> torch.Tensor:
    """(B, L) float32 clips transformed by `draws`: pitch and time shift (one resampling),
    noise (`noise` (B, L) standard normal, used where a clip drew an SNR), gain and the limit."""
    device, length = x.device, x.shape[1]
    rate, shift = draws.rate.to(device), draws.shift.to(device)
    if bool((draws.rate != 1).any() or (draws.shift != 0).any()):
        t = torch.arange(length, device=device, dtype=torch.float32)
        # y(t) = x(r (t - s)): the start (an onset) moved by s, then time scaled about it
        x = read(x, rate[:, None] * (t[None, :] - shift[:, None]), circular)
    if noise is not None:
        rms = x.square().mean(1).sqrt()  # (B,)
        scale = rms * 10 ** (-draws.snr_db.to(device) / 20)  # 0 where no noise (inf dB)
        x = x + noise.to(device) * scale[:, None]
    # gain, then the peak limit: x * min(gain, 1 / peak), as a division so that the peak
    # sample comes out at exactly 1 (x / x is 1 in floating point; x * (1 / x) may not be)
    peak = x.abs().amax(1)  # (B,)
    return x / torch.maximum(10 ** (-draws.gain_db.to(device) / 20), peak)[:, None]


def read(x: torch.Tensor, pos: torch.Tensor, circular: bool) -> torch.Tensor:
    """x (B, L) at fractional positions `pos` (B, L) by linear interpolation, zero outside the
    clip (or periodic, `circular`). Whole-number positions read exact samples."""
    length = x.shape[1]
    if circular:  # x[L] = x[0], positions taken modulo L
        padded, pos = torch.cat([x, x[:, :1]], 1), pos.remainder(length)  # (B, L + 1)
    else:  # a zero each side, positions clamped onto them: outside the clip reads 0
        padded, pos = F.pad(x, (1, 1)), pos.clamp(-1, length) + 1  # (B, L + 2)
    lo = pos.floor().clamp(max=padded.shape[1] - 2)  # the last position reads w = 1
    w = pos - lo  # (B, L) in [0, 1]
    lo = lo.long()
    return torch.lerp(padded.gather(1, lo), padded.gather(1, lo + 1), w)
