"""The built-in audio dataset `notes`: synthesized instrument notes, labelled by pitch class.

Nothing is downloaded: every clip is computed here, deterministically (a fixed seed drives the
only random choices), so ingesting `notes` twice on one machine gives the same snapshot id.

What it is: 1,920 single notes, 0.512 s each (4,096 samples at 8 kHz by default), the product of

- 8 pitch classes, the labels: C, D, E, F, G, A, Bb, B (semitones 0, 2, 4, 5, 7, 9, 10, 11
  above C; three pairs a semitone apart keep the task from being trivial);
- 3 octaves (3, 4, 5: fundamentals from C3 = 130.8 Hz to B5 = 987.8 Hz), so a label is a pitch
  class, not a frequency;
- 4 timbres, band-limited additive synthesis (no partial above 45% of the sample rate, so no
  aliasing): sine, triangle (odd partials, 1/k^2), square (odd partials, 1/k), sawtooth (all
  partials, 1/k);
- 4 envelopes: pluck (2 ms attack, exponential decay with a 120 ms time constant), organ (10 ms
  attack, sustained, 30 ms release), swell (rises over 70% of the clip, then falls), tremolo
  (organ with a 5.5 Hz, 40% deep amplitude modulation);
- 5 detunings: -16, -8, 0, +8, +16 cents (well inside the 100 cents between semitones).

Each clip also gets a random start phase, a peak level between -9 and -3 dBFS, and a Gaussian
noise floor at about -66 dBFS (so no clip is digital silence and no two clips are equal). It is a
toy: clean, monophonic, labelled by construction; a model that learns it has learned pitch and
timbre, not music or speech. It is sized for the cpu preset (1,920 clips, 15 MiB of int16).
"""

from __future__ import annotations

import itertools

import numpy as np

from aigc_core.data.audio import AudioData, check_rate_and_length, to_int16

VERSION = 1  # bump when the synthesis changes: it is part of the snapshot's params
SAMPLE_RATE = 8_000
CLIP_SAMPLES = 4_096
SEED = 20_190_101
PITCH_CLASSES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "Bb": 10, "B": 11}
OCTAVES = (3, 4, 5)
TIMBRES = ("sine", "triangle", "square", "sawtooth")
ENVELOPES = ("pluck", "organ", "swell", "tremolo")
DETUNE_CENTS = (-16, -8, 0, 8, 16)
NOISE_DBFS = -66.0
PEAK_DBFS = (-9.0, -3.0)


def frequency(pitch_class: int, octave: int, cents: float = 0.0) -> float:
    """Equal temperament, A4 = 440 Hz; C4 is MIDI note 60."""
    midi = 12 * (octave + 1) + pitch_class
    return 440.0 * 2.0 ** ((midi - 69 + cents / 100.0) / 12.0)


def partials(timbre: str, f0: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(harmonic numbers, amplitudes) of a timbre, band-limited below 45% of the rate."""
    k = np.arange(1, max(1, int(0.45 * sample_rate / f0)) + 1)
    if timbre == "sine":
        k = k[:1]
        return k, np.ones(1)
    if timbre == "triangle":
        k = k[k % 2 == 1]
        return k, (-1.0) ** ((k - 1) // 2) / k**2
    if timbre == "square":
        k = k[k % 2 == 1]
        return k, 1.0 / k
    if timbre == "sawtooth":
        return k, (-1.0) ** (k + 1) / k
    raise ValueError(f"unknown timbre {timbre!r}; one of {TIMBRES}")


def envelope(kind: str, n: int, sample_rate: int) -> np.ndarray:
    """An amplitude envelope of n samples, peak 1."""
    t = np.arange(n) / sample_rate

    def ramp(seconds: float) -> np.ndarray:  # 0 -> 1 over `seconds`
        return np.clip(t / seconds, 0.0, 1.0)

    release = np.clip((n / sample_rate - t) / 0.03, 0.0, 1.0)  # 30 ms fade at the end
    if kind == "pluck":
        return ramp(0.002) * np.exp(-t / 0.12)
    if kind == "organ":
        return ramp(0.010) * release
    if kind == "swell":
        peak = 0.7 * n / sample_rate
        return np.where(t < peak, t / peak, np.clip((n / sample_rate - t) / (0.3 * peak), 0, 1))
    if kind == "tremolo":
        return ramp(0.010) * release * (1.0 - 0.4 * (0.5 - 0.5 * np.cos(2 * np.pi * 5.5 * t)))
    raise ValueError(f"unknown envelope {kind!r}; one of {ENVELOPES}")


def load_notes(sample_rate: int = SAMPLE_RATE, clip_samples: int = CLIP_SAMPLES) -> AudioData:
    """The `notes` dataset (see the module docstring) as int16 clips."""
    check_rate_and_length(sample_rate, clip_samples)
    names = list(PITCH_CLASSES)
    combos = list(itertools.product(names, OCTAVES, TIMBRES, ENVELOPES, DETUNE_CENTS))
    rng = np.random.default_rng(SEED)
    phases = rng.uniform(0.0, 2 * np.pi, len(combos))
    peaks = 10.0 ** (rng.uniform(*PEAK_DBFS, len(combos)) / 20.0)
    noise_std = 10.0 ** (NOISE_DBFS / 20.0)
    envelopes = {e: envelope(e, clip_samples, sample_rate) for e in ENVELOPES}
    t = np.arange(clip_samples) / sample_rate
    pcm = np.empty((len(combos), clip_samples), dtype=np.int16)
    labels = np.empty(len(combos), dtype=np.int64)
    for i, (name, octave, timbre, env, cents) in enumerate(combos):
        f0 = frequency(PITCH_CLASSES[name], octave, cents)
        k, amp = partials(timbre, f0, sample_rate)
        wave = amp @ np.sin(np.outer(k, 2 * np.pi * f0 * t + phases[i]))  # (L,)
        wave *= envelopes[env]
        wave *= peaks[i] / np.abs(wave).max()
        wave += rng.normal(0.0, noise_std, clip_samples)
        pcm[i] = to_int16(wave.astype(np.float32))
        labels[i] = names.index(name)
    return AudioData(
        pcm=pcm,
        labels=labels,
        label_names=names,
        sample_rate=sample_rate,
        source=(
            f"built-in synthesized notes (aigc_core.data.notes v{VERSION}): 8 pitch classes x "
            f"3 octaves x 4 timbres x 4 envelopes x 5 detunings"
        ),
        params={
            "dataset": "notes",
            "version": VERSION,
            "seed": SEED,
            "sample_rate": sample_rate,
            "clip_samples": clip_samples,
            "pcm": "int16 little-endian",
        },
        files=None,
    )
