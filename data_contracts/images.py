"""The contract for image snapshots.

GX validates a per-row profile of the snapshot (one row per image: label, split, shape, pixel
extremes, count of non-finite pixels) rather than the raw pixel lists, which keeps every property
a plain column check. One expectation per property; the comment names what it guards.

Snapshots store uint8 pixels (formats 2 and 3), so their range and finiteness hold by type, and
float input that is NaN, infinite or outside [0, 1] is refused while the table is built
(`aigc_core.data.snapshot.pixels_uint8`). The pixels are read with
`aigc_core.data.snapshot.pixel_values`, whatever their layout, and the extremes are profiled in
[0, 1] units, so the same checks still guard format 1 snapshots (float32 pixels) read back for
validation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from aigc_core.data.snapshot import pixel_values
from data_contracts import expect
from data_contracts.common import CRITICAL, WARNING, in_both_splits

MAX_DUPLICATE_RATIO = 0.1  # a few repeated images are tolerated (and warned about)


def _extremes(flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (min, max, count of non-finite values) of the rows' values (`pixel_values`),
    min/max over the finite values, in the stored unit (NaN where a row has no finite value)."""
    n = len(lengths)
    pmin, pmax = np.full(n, np.nan), np.full(n, np.nan)
    nonfinite = np.zeros(n, dtype=np.int64)
    rows = lengths > 0  # reduceat over the starts of non-empty rows covers exactly each row
    if not rows.any():
        return pmin, pmax, nonfinite
    starts = (np.cumsum(lengths) - lengths)[rows]
    if np.issubdtype(flat.dtype, np.integer):  # uint8 (formats 2, 3): always finite
        pmin[rows] = np.minimum.reduceat(flat, starts)
        pmax[rows] = np.maximum.reduceat(flat, starts)
        return pmin, pmax, nonfinite
    finite = np.isfinite(flat)
    lo = np.minimum.reduceat(np.where(finite, flat, np.inf), starts).astype(np.float64)
    hi = np.maximum.reduceat(np.where(finite, flat, -np.inf), starts).astype(np.float64)
    pmin[rows] = np.where(np.isinf(lo), np.nan, lo)
    pmax[rows] = np.where(np.isinf(hi), np.nan, hi)
    nonfinite[rows] = np.add.reduceat((~finite).astype(np.int64), starts)
    return pmin, pmax, nonfinite


def profile(table: pa.Table) -> pd.DataFrame:
    """One row per image with the columns the suite checks. Pixel extremes are in [0, 1] units
    whatever the storage: uint8 values (formats 2, 3) are divided by 255, floats (format 1
    snapshots) are taken as they are."""
    values, lengths = pixel_values(table.column("pixels"))
    pmin, pmax, nonfinite = _extremes(values, lengths)
    if np.issubdtype(values.dtype, np.integer):
        pmin, pmax = pmin / 255.0, pmax / 255.0
    ids, splits = table.column("id").to_pandas(), table.column("split").to_pandas()
    return pd.DataFrame(
        {
            "id": ids,
            "split": splits,
            "in_both_splits": in_both_splits(ids, splits),
            "label": table.column("label").to_pandas(),
            "height": table.column("height").to_numpy(),
            "width": table.column("width").to_numpy(),
            "channels": table.column("channels").to_numpy(),
            "n_values": lengths,
            "n_nonfinite": nonfinite,
            # no finite pixel at all: the extremes are empty (n_nonfinite reports the row)
            "pixel_min": pmin,
            "pixel_max": pmax,
        }
    )


def expectations(manifest: dict) -> list:
    """The suite for an image snapshot whose manifest declares its shape and label set."""
    c, h, w = manifest["image_shape"]
    return [
        # an empty snapshot passes every per-row check below: demand rows
        expect.has_rows("The snapshot has at least one image (per-row checks pass on no rows)."),
        # training and the evaluator both need data in each split, and splits have two names
        *expect.both_splits("image", "images"),
        # an unlabeled image, or one outside the declared set, cannot train or score the evaluator
        *expect.declared_labels("image", manifest["label_set"]),
        # NaN or inf pixels poison every gradient
        expect.zero(
            "n_nonfinite",
            "NaN or infinite pixels",
            "No pixel is NaN or infinite: one would poison every gradient.",
        ),
        # pixels are in [0, 1] once scaled (uint8 / 255; format 1 floats as stored)
        expect.between(
            "pixel_min",
            "pixels below 0",
            "No pixel is below 0 (pixels are in [0, 1] once scaled).",
            min_value=0.0,
        ),
        expect.between(
            "pixel_max",
            "pixels above 1",
            "No pixel is above 1 (pixels are in [0, 1] once scaled).",
            max_value=1.0,
        ),
        # every image has the declared shape, and its pixel list matches that shape
        expect.equals(
            "height",
            h,
            "wrong height",
            f"Every image is {h} pixels high, as the manifest declares.",
        ),
        expect.equals(
            "width", w, "wrong width", f"Every image is {w} pixels wide, as the manifest declares."
        ),
        expect.equals(
            "channels",
            c,
            "wrong channel count",
            f"Every image has {c} channel(s), as the manifest declares.",
        ),
        expect.equals(
            "n_values",
            c * h * w,
            "pixel list length does not match the shape",
            f"Every pixel list holds {c * h * w} values ({c}x{h}x{w}).",
        ),
        # the same image in train and validation inflates held-out scores
        expect.zero(
            "in_both_splits",
            "train/validation overlap",
            "No image is in both splits: that would inflate held-out scores.",
        ),
        # a dataset that is mostly repeats trains a model to copy them; a few are reported
        *expect.few_repeats("image", "images", MAX_DUPLICATE_RATIO),
    ]


__all__ = ["CRITICAL", "WARNING", "expectations", "profile"]
