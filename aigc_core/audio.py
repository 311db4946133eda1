"""Audio helpers shared by the audio model, its evaluator, curation and content: WAV bytes,
log-mel features, a spectrogram picture and per-clip level statistics.

Clips are mono, a batch is (N, L): float samples in [-1, 1], or int16 PCM (read as pcm / 32768,
`as_float`). The statistics are numpy only, so that the data contract (which never imports
torch) computes them exactly as curation does; `log_mel` is torch (the evaluator runs it on
batches); soundfile is imported only when WAV bytes are written.

Definitions (the data contract, `data_contracts.audio`, and curation both call these; each
passes its own thresholds: the contract judges silence per 32 ms frame at -60 dBFS and clipping
at int16 full scale, curation uses the defaults here):
- `peak`: max |x| of each clip;
- `silence_fraction`: the share of a clip's frames (`SILENCE_FRAME` samples, not overlapping,
  a last partial frame dropped) whose RMS is below `threshold_db` dBFS (-50 dB: 0.0032 of full
  scale). Frames, not samples: a tone's zero crossings are not silence;
- `clipping_fraction`: the share of samples with |x| >= `level` (0.999: int16 -32768 and
  32767 both count, as do float samples at the rails);
- `dc_offset`: the mean sample of each clip.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np

SILENCE_FRAME = 256  # samples: 32 ms at 8 kHz, 16 ms at 16 kHz
SILENCE_DB = -50.0
CLIPPING_LEVEL = 0.999
N_MELS = 64
TOP_DB = 80.0  # log-mel values below the clip's maximum minus this are floored there


def as_float(x: np.ndarray) -> np.ndarray:
    """Clips as float32 in [-1, 1]: int16 PCM divided by 32768, floats as they are; a single
    clip (L,) becomes (1, L)."""
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"clips must be (N, L) or (L,), got shape {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"clips must be int16 PCM or floats in [-1, 1], got {a.dtype}")
    return a.astype(np.float32, copy=False)


def peak(x: np.ndarray) -> np.ndarray:
    """(N,) max |x| of each clip."""
    return np.abs(as_float(x)).max(axis=1)


def silence_fraction(
    x: np.ndarray, threshold_db: float = SILENCE_DB, frame: int = SILENCE_FRAME
) -> np.ndarray:
    """(N,) share of each clip's `frame`-sample frames with RMS below `threshold_db` dBFS; a clip
    shorter than one frame is one frame."""
    a = as_float(x)
    n, length = a.shape
    frames = max(1, length // frame)
    f = a[:, : frames * frame].reshape(n, frames, -1)
    rms = np.sqrt(np.mean(np.square(f, dtype=np.float64), axis=2))  # (N, frames)
    return (rms < 10 ** (threshold_db / 20)).mean(axis=1)


def clipping_fraction(x: np.ndarray, level: float = CLIPPING_LEVEL) -> np.ndarray:
    """(N,) share of samples at or beyond `level` of full scale."""
    return (np.abs(as_float(x)) >= level).mean(axis=1)


def dc_offset(x: np.ndarray) -> np.ndarray:
    """(N,) mean sample of each clip (in full-scale units)."""
    return as_float(x).mean(axis=1, dtype=np.float64)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Floats in [-1, 1] -> int16 PCM (clipped, rounded: x * 32767)."""
    return np.round(np.clip(np.asarray(x, dtype=np.float32), -1, 1) * 32767).astype(np.int16)


def to_wav_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    """One clip (L,) of floats in [-1, 1] as a mono 16-bit PCM WAV file."""
    import soundfile  # only where WAV bytes are written

    clip = np.asarray(x)
    if clip.ndim != 1:
        raise ValueError(f"a WAV clip must be (L,), got shape {clip.shape}")
    buf = io.BytesIO()
    soundfile.write(buf, to_pcm16(clip), int(sample_rate), format="WAV", subtype="PCM_16")
    return buf.getvalue()


def fft_size(sample_rate: int) -> int:
    """STFT size: the power of two nearest 32 ms (256 at 8 kHz, 512 at 16 kHz)."""
    return 2 ** round(math.log2(0.032 * sample_rate))


@functools.cache
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters evenly spaced on the HTK mel scale from 0 Hz
    to Nyquist (Slaney area normalisation: each filter sums to about the same energy)."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = hz(np.linspace(0, mel(sample_rate / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = np.maximum(0, np.minimum(up, down))
    return (fb * (2.0 / (hi - lo))).astype(np.float32)


def log_mel(x, sample_rate: int, n_mels: int = N_MELS, top_db: float | None = TOP_DB):
    """(B, L) float tensor (or (B, 1, L)) in [-1, 1] -> (B, n_mels, T) log-mel power in dB,
    T = L // hop + 1 with hop = n_fft // 4 (Hann window, centred frames). With `top_db`, values
    more than `top_db` below each clip's maximum are raised to that floor (silence is a floor,
    not -inf)."""
    import torch

    if x.ndim == 3:
        x = x[:, 0]
    n_fft = fft_size(sample_rate)
    spec = torch.stft(
        x.float(),
        n_fft,
        hop_length=n_fft // 4,
        window=torch.hann_window(n_fft, device=x.device),
        center=True,
        return_complex=True,
    )  # (B, n_fft/2+1, T)
    fb = torch.from_numpy(mel_filterbank(int(sample_rate), n_fft, n_mels)).to(x.device)
    power = fb @ spec.abs().square()  # (B, n_mels, T)
    db = 10 * torch.log10(power.clamp_min(1e-10))
    if top_db is not None:
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - top_db)
    return db


def spectrogram_image(x: np.ndarray, sample_rate: int, height: int = 96):
    """A small log-mel spectrogram picture of one clip (L,), a PIL RGB image: low frequencies at
    the bottom, brighter is louder, 80 dB below the clip's maximum black; at least twice as wide
    as high."""
    import torch
    from PIL import Image

    db = log_mel(torch.from_numpy(as_float(x)), sample_rate)[0].numpy()  # (M, T)
    img = np.clip((db - (db.max() - TOP_DB)) / TOP_DB, 0, 1)[::-1]  # (M, T), high frequencies up
    pic = Image.fromarray(np.round(_magma(img) * 255).astype(np.uint8), "RGB")
    return pic.resize((max(pic.width, 2 * height), height), Image.Resampling.BILINEAR)


def spectrogram_png(x: np.ndarray, sample_rate: int, height: int = 96) -> bytes:
    """`spectrogram_image` as PNG bytes (a report card's picture)."""
    buf = io.BytesIO()
    spectrogram_image(x, sample_rate, height).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# a few stops of a dark-to-bright perceptual colour map (magma-like), interpolated linearly
_STOPS = np.array(
    [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
    dtype=np.float32,
)


def _magma(v: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) RGB in [0, 1]."""
    pos = v * (len(_STOPS) - 1)
    i = np.clip(pos.astype(np.int64), 0, len(_STOPS) - 2)
    t = (pos - i)[..., None]
    return ((1 - t) * _STOPS[i] + t * _STOPS[i + 1]) / 255
