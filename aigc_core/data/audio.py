"""Audio sources: a user's folder of WAV/FLAC recordings, and the clips a snapshot holds.

In memory a dataset of clips is an `AudioData`: int16 mono PCM, every clip exactly L samples at
one sample rate, with int64 labels. A model trains on `pcm / 32768` as float32 (N, 1, L).

A folder (`load_audio_folder`) holds `.wav` / `.flac` files, optionally in one subfolder per
class (the subfolder names are the labels, as for image folders). Each file is read once with
soundfile (libsndfile) and converted the same way, whatever it holds:

- sample formats: 8/16/24/32-bit integer PCM, 32/64-bit float, u-law/A-law WAV and 8-24 bit
  FLAC are all read as float32 and converted, so a folder may mix them. A WAV or FLAC whose
  coding libsndfile cannot read (e.g. MP3-in-WAV) is refused, naming the file.
- channels: averaged into one (mono). More than MAX_CHANNELS channels is refused from the header.
- sample rate: resampled once per file to the snapshot's rate with soxr (HQ); the same rate is
  left as it is (an int16 file at the target rate round-trips exactly).
- length: a longer clip keeps its loudest window of L samples (the window with the most energy;
  the earliest one when several tie, so a steady sound keeps its start); a shorter one is padded
  with zeros at the end.
- level: float input is scaled by 32768 and rounded; values beyond full scale are clipped to
  int16 (the data contract reports clipping), never rescaled, so levels are kept as recorded.

Refused before anything is written, each with a DataSourceError naming the file: a zero-length
file or one with no audio frames; a text file or anything else that is not WAV/FLAC ("fake
WAV"); a truncated WAV (its data chunk claims more bytes than the file has) or FLAC (the decoder
loses sync, or returns fewer frames than its header); NaN or infinite samples in a float file;
a file longer than `max_seconds` (10 minutes by default), a rate above MAX_INPUT_RATE, or more
than MAX_CHANNELS channels, all read from the header before any sample is; a symlink that points
outside the folder (`files.walk_files`).

`audio_data(table)` turns a snapshot's audio table back into an `AudioData`. This module never
imports torch.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aigc_core import progress
from aigc_core.data.files import DataSourceError, require_exists
from aigc_core.data.folders import scan_folder

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")
DEFAULT_SAMPLE_RATE = 16_000  # a user's folder; the built-in `notes` is 8 kHz
DEFAULT_CLIP_SAMPLES = 16_384  # 1.024 s at 16 kHz; models take 16 * 4**k samples
DEFAULT_MAX_SECONDS = 600.0  # per file: longer recordings are refused from the header
MAX_CHANNELS = 8  # more is a multitrack session or a broken header, not a recording
MAX_INPUT_RATE = 384_000  # the highest rate a recorder writes; above it the header is suspect
MIN_RATE, MAX_RATE = 1_000, 192_000  # the snapshot rates this reader makes
MIN_CLIP, MAX_CLIP = 64, 1 << 20  # clip lengths in samples
READ_BLOCK = 1 << 20  # frames read at once: a long multichannel file is mixed down per block
WAV_FORMATS = ("WAV", "WAVEX", "RF64", "W64", "FLAC")  # libsndfile's major formats we accept
_UNKNOWN_SIZE = 0xFFFFFFFF  # streaming writers and RF64 leave the RIFF data size unset


@dataclass
class AudioData:
    pcm: np.ndarray  # (N, L) int16, mono, every clip exactly L samples
    labels: np.ndarray  # (N,) int64 in [0, len(label_names))
    label_names: list[str]
    sample_rate: int  # Hz, the snapshot's rate
    source: str
    params: dict = field(default_factory=dict)  # what made it (for the content id)
    files: list[str] | None = None  # each clip's file, relative to the folder; None: built in


def check_rate_and_length(sample_rate: int, clip_samples: int) -> None:
    """A snapshot rate and clip length this reader makes, else a DataSourceError naming them."""
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise DataSourceError(
            f"sample rate {sample_rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz; choose another"
        )
    if not MIN_CLIP <= clip_samples <= MAX_CLIP:
        raise DataSourceError(
            f"clip length {clip_samples} samples is outside {MIN_CLIP}..{MAX_CLIP}; the audio "
            f"models take 16 * 4**k samples (1024, 4096, 16384, 65536)"
        )


def to_int16(x: np.ndarray) -> np.ndarray:
    """float samples (1.0 = full scale) as int16: x * 32768 rounded, clipped to -32768..32767."""
    return np.clip(np.rint(x * np.float32(32768.0)), -32768, 32767).astype(np.int16)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """`x` at exactly `length` samples: its loudest window (earliest on ties), or zero-padded at
    the end."""
    n = len(x)
    if n <= length:
        out = np.zeros(length, dtype=x.dtype)
        out[:n] = x
        return out
    energy = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    window = energy[length:] - energy[:-length]  # (n - length + 1,) energy of each window
    # cumulative sums round: treat windows within a hair of the maximum as ties
    start = int(np.flatnonzero(window >= window.max() * (1 - 1e-9) - 1e-12)[0])
    return x[start : start + length]


def _wav_truncation(path: Path) -> str | None:
    """Why a RIFF WAV file is cut short (its data chunk claims more bytes than follow it), or
    None. libsndfile silently reads what is there, so this walks the chunk headers itself."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None  # RF64, W64 and FLAC: their own decoders check
        order = "<" if head[:4] == b"RIFF" else ">"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack(order + "4sI", f.read(8))
            if chunk == b"data":
                if length != _UNKNOWN_SIZE and pos + 8 + length > size:
                    return (
                        f"its data chunk declares {length:,} bytes but only "
                        f"{size - pos - 8:,} follow"
                    )
                return None
            pos += 8 + length + (length & 1)  # chunks are padded to an even size
        return "it has no data chunk" if pos > size else None


def read_clip(
    path: Path,
    sample_rate: int,
    clip_samples: int,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> tuple[np.ndarray, str]:
    """One WAV/FLAC file -> (int16 mono clip of `clip_samples` at `sample_rate`, its format as
    "FORMAT/SUBTYPE"). Checks the header (format, frames, rate, channels) before reading any
    sample; every refusal is a DataSourceError naming the file."""
    import soundfile as sf
    import soxr

    if path.stat().st_size == 0:
        raise DataSourceError(f"{path}: the file is empty (0 bytes); remove it or replace it")
    why = _wav_truncation(path)
    if why:
        raise DataSourceError(f"{path}: truncated WAV file ({why}); remove it or replace it")
    try:
        with sf.SoundFile(path) as f:
            fmt, frames, rate, channels = f.format, f.frames, f.samplerate, f.channels
            if fmt not in WAV_FORMATS:
                raise DataSourceError(
                    f"{path}: a {fmt} file, not WAV or FLAC; convert it to WAV or FLAC"
                )
            if channels > MAX_CHANNELS:
                raise DataSourceError(
                    f"{path}: {channels} channels (at most {MAX_CHANNELS} are read); mix it "
                    f"down to mono or stereo first"
                )
            if not 0 < rate <= MAX_INPUT_RATE:
                raise DataSourceError(
                    f"{path}: sample rate {rate} Hz in its header (at most {MAX_INPUT_RATE}); "
                    f"the header is corrupt or the file needs resampling first"
                )
            if frames <= 0:
                raise DataSourceError(f"{path}: holds no audio frames; remove it or replace it")
            if frames > max_seconds * rate:
                raise DataSourceError(
                    f"{path}: {frames / rate / 60:,.1f} minutes long (at most "
                    f"{max_seconds / 60:g} per file); cut it into shorter files or raise "
                    f"the limit (--max-seconds)"
                )
            mono = np.empty(frames, dtype=np.float32)
            done = 0
            for block in f.blocks(READ_BLOCK, dtype="float32", always_2d=True):
                n = min(len(block), frames - done)
                bad = n * channels - int(np.isfinite(block[:n]).sum())
                if bad:
                    raise DataSourceError(
                        f"{path}: {bad} NaN or infinite sample(s) in the first "
                        f"{done + n:,} frames; fix the recording or remove the file"
                    )
                mono[done : done + n] = block[:n].mean(axis=1) if channels > 1 else block[:n, 0]
                done += n
            subtype = f.subtype
    except sf.SoundFileError as e:
        raise DataSourceError(
            f"{path}: not a readable WAV or FLAC file ({e}); it is truncated, corrupt, of a "
            f"coding libsndfile cannot read, or not audio at all: remove or convert it"
        ) from None
    if done < frames:
        raise DataSourceError(
            f"{path}: truncated: its header declares {frames:,} frames but {done:,} could be "
            f"read; remove it or replace it"
        )
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return to_int16(fit_length(mono, clip_samples)), f"{fmt}/{subtype}"


def load_audio_folder(
    root: Path,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    clip_samples: int = DEFAULT_CLIP_SAMPLES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> AudioData:
    """An `AudioData` from a folder of WAV/FLAC files (see the module docstring)."""
    check_rate_and_length(sample_rate, clip_samples)
    if not max_seconds > 0:
        raise DataSourceError(f"max_seconds {max_seconds} must be positive")
    root = require_exists(Path(root))
    files, labels, names = scan_folder(
        root,
        AUDIO_SUFFIXES,
        what="recordings",
        hint="no WAV or FLAC files found; an audio folder holds *.wav / *.flac files",
    )
    pcm = np.empty((len(files), clip_samples), dtype=np.int16)
    formats: dict[str, int] = {}
    for i, f in enumerate(files):
        pcm[i], fmt = read_clip(f, sample_rate, clip_samples, max_seconds)
        formats[fmt] = formats.get(fmt, 0) + 1
        if i % 64 == 0:
            progress.report("read audio", i, len(files))
    progress.report("read audio", len(files), len(files))
    log.info(
        "read %d recordings in %d classes from %s (%s)",
        len(files),
        len(names),
        root,
        ", ".join(f"{n} {k}" for k, n in sorted(formats.items())),
    )
    return AudioData(
        pcm=pcm,
        labels=np.asarray(labels, dtype=np.int64),
        label_names=names,
        sample_rate=sample_rate,
        source=f"audio folder {root.resolve()}",
        params=folder_params(sample_rate, clip_samples),
        files=[f.relative_to(root).as_posix() for f in files],
    )


def folder_params(sample_rate: int, clip_samples: int) -> dict:
    """The preprocessing of a folder's recordings, as recorded in the snapshot's params."""
    return {
        "sample_rate": sample_rate,
        "clip_samples": clip_samples,
        "channels": "mean of all channels (mono)",
        "resample": "soxr HQ",
        "trim": "loudest window (earliest on ties)",
        "pad": "zeros at the end",
        "pcm": "int16 little-endian",
    }


def audio_data(table: pa.Table, split: str | None = None, manifest: dict | None = None):
    """A snapshot's audio table (`snapshot.audio_table`) as an `AudioData`, for one split or all
    rows. Label names come from the whole table (a split may miss a class), or from the
    manifest's `label_names` when given; `source` and `params` from the manifest. The PCM is a
    writable copy (torch.from_numpy warns on Arrow's read-only buffers)."""
    from aigc_core.data.snapshot import SnapshotError, pcm_values

    if manifest and manifest.get("label_names"):
        names = list(manifest["label_names"])
    else:
        pairs = table.select(["label", "label_name"]).group_by(["label", "label_name"])
        found = sorted((r["label"], r["label_name"]) for r in pairs.aggregate([]).to_pylist())
        if [lab for lab, _ in found] != list(range(len(found))):
            raise SnapshotError(
                f"labels and label names do not pair up as 0..K-1: {found[:10]}; ingest the "
                f"recordings again"
            )
        names = [name for _, name in found]
    if split is not None:
        table = table.filter(pc.equal(table.column("split"), split))
    if table.num_rows == 0:
        raise SnapshotError(f"split {split!r} is empty")
    rates = pc.unique(table.column("sample_rate")).to_pylist()
    if len(rates) != 1:
        raise SnapshotError(f"clips have mixed sample rates {sorted(rates)}; ingest them again")
    return AudioData(
        pcm=pcm_values(table.column("pcm")).copy(),  # writable: not a view of Arrow's buffer
        labels=table.column("label").to_numpy(zero_copy_only=False).astype(np.int64),
        label_names=names,
        sample_rate=int(rates[0]),
        source=(manifest or {}).get("source", "snapshot table"),
        params=dict((manifest or {}).get("params", {})),
        files=None,
    )
