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
from data_contracts.common import CRITICAL, SPLITS, WARNING, guards, in_both_splits

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
    import great_expectations.expectations as gxe

    c, h, w = manifest["image_shape"]
    labels = manifest["label_set"]

    return [
        # an empty snapshot passes every per-row check below: demand rows
        gxe.ExpectTableRowCountToBeBetween(
            min_value=1,
            description="The snapshot has at least one image (per-row checks pass on no rows).",
            meta=guards("empty dataset"),
        ),
        # training and the evaluator both need data in each split
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="split",
            value_set=SPLITS,
            description="Both the train and the validation split hold images.",
            meta=guards("an empty train or validation split"),
        ),
        # splits are only these two names
        gxe.ExpectColumnValuesToBeInSet(
            column="split",
            value_set=SPLITS,
            description="Every image is in the train or the validation split, no other.",
            meta=guards("unknown split names"),
        ),
        # an unlabeled image cannot train or score the evaluator
        gxe.ExpectColumnValuesToNotBeNull(
            column="label",
            description="Every image has a label: the evaluator cannot score an unlabeled one.",
            meta=guards("missing labels"),
        ),
        # labels outside the declared set break the classifier head
        gxe.ExpectColumnValuesToBeInSet(
            column="label",
            value_set=labels,
            description="Every label is in the label set the manifest declares.",
            meta=guards("labels out of range"),
        ),
        # NaN or inf pixels poison every gradient
        gxe.ExpectColumnValuesToBeBetween(
            column="n_nonfinite",
            min_value=0,
            max_value=0,
            description="No pixel is NaN or infinite: one would poison every gradient.",
            meta=guards("NaN or infinite pixels"),
        ),
        # pixels are in [0, 1] once scaled (uint8 / 255; format 1 floats as stored)
        gxe.ExpectColumnValuesToBeBetween(
            column="pixel_min",
            min_value=0.0,
            description="No pixel is below 0 (pixels are in [0, 1] once scaled).",
            meta=guards("pixels below 0"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="pixel_max",
            max_value=1.0,
            description="No pixel is above 1 (pixels are in [0, 1] once scaled).",
            meta=guards("pixels above 1"),
        ),
        # every image has the declared shape, and its pixel list matches that shape
        gxe.ExpectColumnValuesToBeInSet(
            column="height",
            value_set=[h],
            description=f"Every image is {h} pixels high, as the manifest declares.",
            meta=guards("wrong height"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="width",
            value_set=[w],
            description=f"Every image is {w} pixels wide, as the manifest declares.",
            meta=guards("wrong width"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="channels",
            value_set=[c],
            description=f"Every image has {c} channel(s), as the manifest declares.",
            meta=guards("wrong channel count"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="n_values",
            value_set=[c * h * w],
            description=f"Every pixel list holds {c * h * w} values ({c}x{h}x{w}).",
            meta=guards("pixel list length does not match the shape"),
        ),
        # the same image in train and validation inflates held-out scores
        gxe.ExpectColumnValuesToBeBetween(
            column="in_both_splits",
            min_value=0,
            max_value=0,
            description="No image is in both splits: that would inflate held-out scores.",
            meta=guards("train/validation overlap"),
        ),
        # a dataset that is mostly repeats trains a model to copy them
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="id",
            min_value=1.0 - MAX_DUPLICATE_RATIO,
            description=(
                f"At most {MAX_DUPLICATE_RATIO:.0%} of the images are repeats: "
                "a model trained on mostly repeats learns to copy them."
            ),
            meta=guards("duplicate ratio"),
        ),
        # ids are content hashes: a repeat is an exact duplicate image (reported, not blocking)
        gxe.ExpectColumnValuesToBeUnique(
            column="id",
            severity=WARNING,
            description="Each image appears once; a few exact repeats are reported, not blocked.",
            meta=guards("duplicate images"),
        ),
    ]


__all__ = ["CRITICAL", "WARNING", "expectations", "profile"]
