"""The contract for audio snapshots.

GX validates a per-clip profile (split, label and its class's share, sample rate, length, peak
level, fraction of silent frames, fraction of clipped samples, DC offset) rather than the PCM
itself, so every property is a plain column check. One expectation per property; the comment
names what it guards.

Severities: what breaks training or evaluation blocks (rates, lengths, labels, empty splits,
split leakage, a dataset of mostly silence or mostly repeats); what real recordings often have
and a user should hear about is a warning (quiet clips, clipping, DC offset, unbalanced classes,
a few exact repeats). Levels are in dBFS relative to int16 full scale (32768).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from aigc_core import audio
from aigc_core.data.snapshot import pcm_values
from data_contracts import expect
from data_contracts.common import CRITICAL, WARNING, guards, in_both_splits

FULL_SCALE = 32768.0
FRAME_SECONDS = 0.032  # silence is judged per 32 ms frame
SILENCE_DBFS = -60.0  # a frame whose RMS is below this is silent
MAX_SILENT_FRACTION = 0.5  # a clip more than half silent is "mostly silence"
MAX_MOSTLY_SILENT = 0.1  # ... and at most 10% of the clips may be (blocking)
MIN_PEAK_DBFS = -40.0  # a quieter clip is reported
MAX_CLIPPED_FRACTION = 0.001  # samples at full scale: more than 0.1% of a clip is clipping
CLIPPED_LEVEL = (FULL_SCALE - 1) / FULL_SCALE  # at full scale: int16 32767 or -32768
MAX_DC_OFFSET = 0.02  # |mean| as a fraction of full scale
MIN_FAIR_SHARE = 0.2  # a class with under a fifth of its fair share (1/K) is reported
MAX_DUPLICATE_RATIO = 0.1  # a few repeated clips are tolerated (and warned about)
BLOCK_ROWS = 1024  # clips profiled at once: bounds the float temporaries


def _levels(pcm: np.ndarray, frame: int) -> dict[str, np.ndarray]:
    """Per-clip peak (dBFS), silent-frame fraction, clipped fraction and |DC offset| of (N, L)
    int16 clips, by the definitions curation uses (`aigc_core.audio`) with this contract's
    thresholds, computed in blocks of BLOCK_ROWS clips."""
    n = len(pcm)
    out = {k: np.zeros(n) for k in ("peak_dbfs", "silent_fraction", "clipped_fraction", "dc")}
    for start in range(0, n, BLOCK_ROWS):
        block = audio.as_float(pcm[start : start + BLOCK_ROWS])  # (B, L) float32, converted once
        rows = slice(start, start + len(block))
        with np.errstate(divide="ignore"):
            out["peak_dbfs"][rows] = np.maximum(20.0 * np.log10(audio.peak(block)), -120.0)
        out["silent_fraction"][rows] = audio.silence_fraction(block, SILENCE_DBFS, frame)
        out["clipped_fraction"][rows] = audio.clipping_fraction(block, CLIPPED_LEVEL)
        out["dc"][rows] = np.abs(audio.dc_offset(block))
    return out


def profile(table: pa.Table) -> pd.DataFrame:
    """One row per clip with the columns the suite checks."""
    pcm = pcm_values(table.column("pcm"))
    rates = table.column("sample_rate").to_numpy(zero_copy_only=False)
    rate = int(np.median(rates)) if len(rates) else 0
    levels = _levels(pcm, max(1, round(FRAME_SECONDS * rate)) if rate > 0 else 256)
    ids, splits = table.column("id").to_pandas(), table.column("split").to_pandas()
    labels = table.column("label").to_pandas()
    share = labels.map(labels.value_counts(normalize=True)).astype("float64")
    return pd.DataFrame(
        {
            "id": ids,
            "split": splits,
            "in_both_splits": in_both_splits(ids, splits),
            "label": labels,
            "label_share": share,
            "sample_rate": rates,
            "n_samples": np.full(len(pcm), pcm.shape[1], dtype=np.int64),
            "peak_dbfs": levels["peak_dbfs"],
            "silent_fraction": levels["silent_fraction"],
            "clipped_fraction": levels["clipped_fraction"],
            "dc_offset": levels["dc"],
        }
    )


def expectations(manifest: dict) -> list:
    """The suite for an audio snapshot whose manifest declares its rate, length and labels."""
    import great_expectations.expectations as gxe

    rate, length = manifest["sample_rate"], manifest["clip_samples"]
    labels = manifest["label_set"]
    min_share = MIN_FAIR_SHARE / max(1, len(labels))
    return [
        # an empty snapshot passes every per-row check below: demand rows
        expect.has_rows("The snapshot has at least one clip (per-row checks pass on no rows)."),
        # training and the evaluator both need clips in each split, and splits have two names
        *expect.both_splits("clip", "clips"),
        # an unlabeled clip, or one outside the declared set, cannot train or score the evaluator
        *expect.declared_labels("clip", labels),
        # a declared class with no clips: the evaluator cannot learn or score it
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="label",
            value_set=labels,
            description="Every class the manifest declares has clips.",
            meta=guards("a class with no clips"),
        ),
        # a rare class is learned poorly and scored noisily (reported, not blocking)
        expect.between(
            "label_share",
            "unbalanced classes",
            f"Every class holds at least {MIN_FAIR_SHARE:.0%} of its fair share of the clips "
            f"({min_share:.1%}): rarer classes are learned and scored poorly.",
            min_value=min_share,
            severity=WARNING,
        ),
        # one rate per snapshot: a model's time axis means one thing
        expect.equals(
            "sample_rate",
            rate,
            "wrong sample rate",
            f"Every clip is at {rate} Hz, as the manifest declares.",
        ),
        # one length per snapshot: the models take fixed-length clips
        expect.equals(
            "n_samples",
            length,
            "wrong clip length",
            f"Every clip holds {length} samples, as the manifest declares.",
        ),
        # a very quiet clip is mostly the noise floor (reported: quiet recordings exist)
        expect.between(
            "peak_dbfs",
            "quiet clips",
            f"Every clip peaks above {MIN_PEAK_DBFS:g} dBFS.",
            min_value=MIN_PEAK_DBFS,
            severity=WARNING,
        ),
        # a dataset of mostly silence trains a generator of silence
        expect.between(
            "silent_fraction",
            "mostly silence",
            f"At most {MAX_MOSTLY_SILENT:.0%} of the clips are more than "
            f"{MAX_SILENT_FRACTION:.0%} silent ({FRAME_SECONDS * 1000:g} ms frames below "
            f"{SILENCE_DBFS:g} dBFS RMS).",
            max_value=MAX_SILENT_FRACTION,
            mostly=1.0 - MAX_MOSTLY_SILENT,
        ),
        # clipped recordings teach a generator distortion
        expect.between(
            "clipped_fraction",
            "clipping",
            f"At most {MAX_CLIPPED_FRACTION:.1%} of a clip's samples are at full scale.",
            max_value=MAX_CLIPPED_FRACTION,
            severity=WARNING,
        ),
        # a DC offset is an artefact of the recorder, and wastes a generator's range
        expect.between(
            "dc_offset",
            "DC offset",
            f"Every clip's mean is within {MAX_DC_OFFSET:.0%} of full scale of 0.",
            max_value=MAX_DC_OFFSET,
            severity=WARNING,
        ),
        # the same clip in train and validation inflates held-out scores
        expect.zero(
            "in_both_splits",
            "train/validation overlap",
            "No clip is in both splits: that would inflate held-out scores.",
        ),
        # a dataset that is mostly repeats trains a model to copy them; a few are reported
        *expect.few_repeats("clip", "clips", MAX_DUPLICATE_RATIO),
    ]


__all__ = ["CRITICAL", "WARNING", "expectations", "profile"]
