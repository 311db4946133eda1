"""The image data contract: a good snapshot passes, each kind of corruption is caught."""

import numpy as np
import pyarrow as pa
import pytest

from aigc_core.data.files import DataSourceError
from aigc_core.data.snapshot import image_table
from data_contracts import ContractViolation, validate_snapshot
from tests.conftest import tiny_images

MANIFEST = {"id": "test", "kind": "image", "image_shape": [1, 28, 28], "label_set": list(range(10))}


def table_of(mutate=None, n=60):
    data = tiny_images(n=n)
    if mutate:
        mutate(data)
    return image_table(data)


def float_table(mutate) -> pa.Table:
    """The mutated images as a table with float32 pixels (format 1's layout), which can hold what
    uint8 cannot. Ingest refuses such data while building the uint8 table; the contract still
    guards a float table (a format 1 snapshot read back for validation)."""
    data = tiny_images(n=60)
    mutate(data)
    with pytest.raises(DataSourceError, match="Float pixels must be finite and in"):
        image_table(data)
    good = image_table(tiny_images(n=60))  # ids, splits, labels, shape of the same images
    offsets = pa.array(np.arange(0, 61 * 784, 784, dtype=np.int32))
    pixels = pa.ListArray.from_arrays(offsets, pa.array(data.pixels.reshape(-1), pa.float32()))
    return good.set_column(good.schema.get_field_index("pixels"), "pixels", pixels)


def failed(table) -> str:
    with pytest.raises(ContractViolation) as e:
        validate_snapshot(table, MANIFEST)
    return str(e.value)


def test_a_good_snapshot_passes():
    report = validate_snapshot(table_of(), MANIFEST)
    assert report.success and not report.blocking_failures
    assert len(report.checks) >= 10


def test_nan_pixels_are_blocked():
    def nan(d):
        d.pixels[3, 0, 5, 5] = np.nan
        d.pixels[7, 0, 1, 1] = np.inf

    msg = failed(float_table(nan))
    assert "n_nonfinite" in msg and "2 rows unexpected" in msg
    assert "NaN or infinite pixels" in msg


def test_out_of_range_pixels_are_blocked():
    def hot(d):
        d.pixels[0, 0, 0, 0] = 3.0

    msg = failed(float_table(hot))
    assert "pixel_max" in msg and "pixels above 1" in msg


def test_labels_out_of_range_are_blocked():
    def bad(d):
        d.labels[:2] = 42

    msg = failed(table_of(bad))
    assert "labels out of range" in msg and "42" in msg


def test_an_empty_split_is_blocked():
    table = table_of()
    only_train = table.filter(table.column("split").to_numpy(zero_copy_only=False) == "train")
    assert "an empty train or validation split" in failed(only_train)


def test_an_empty_snapshot_is_blocked():
    assert "empty dataset" in failed(table_of().slice(0, 0))


def test_wrong_shape_is_blocked():
    manifest = {**MANIFEST, "image_shape": [1, 32, 32]}
    with pytest.raises(ContractViolation, match="wrong height"):
        validate_snapshot(table_of(), manifest)


def test_overlap_between_splits_is_blocked():
    table = table_of()
    rows = table.to_pylist()
    j = [r["split"] for r in rows].index("validation")
    rows.append({**rows[j], "split": "train"})  # one image in both splits
    msg = failed(pa.Table.from_pylist(rows, schema=table.schema))
    assert "train/validation overlap" in msg and "2 rows unexpected" in msg


def test_mostly_duplicates_are_blocked():
    def dup(d):
        d.pixels[:20] = d.pixels[0]

    assert "duplicate ratio" in failed(table_of(dup))


def test_duplicates_only_warn(caplog):
    def dup(d):
        d.pixels[1] = d.pixels[0]

    report = validate_snapshot(table_of(dup), MANIFEST)
    assert report.success
    assert [c.guards for c in report.warnings] == ["duplicate images"]
