import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aigc_core.data.files import DataSourceError
from aigc_core.data.snapshot import (
    FORMAT_VERSION,
    TEXT_SCHEMA,
    SnapshotError,
    content_id,
    find_snapshot,
    image_arrays,
    image_table,
    list_snapshots,
    pixel_values,
    read_table,
    split_of,
    text_split,
    text_table,
    write_snapshot,
)
from tests.conftest import tiny_images


def publish(root, data, **kw):
    return write_snapshot(
        root, "tiny", image_table(data), kind="image", source=data.source, params=data.params, **kw
    )


def tree(root):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_same_content_gives_same_id_and_writes_nothing(tmp_path):
    first = publish(tmp_path, tiny_images())
    before = tree(tmp_path)
    again = publish(tmp_path, tiny_images())
    assert first.created and not again.created
    assert again.id == first.id
    assert tree(tmp_path) == before


def test_different_content_gives_a_different_id(tmp_path):
    a = publish(tmp_path, tiny_images(seed=0))
    b = publish(tmp_path, tiny_images(seed=1))
    assert a.id != b.id


def test_manifest_describes_the_parts(tmp_path):
    snap = publish(tmp_path, tiny_images(n=50), rows_per_part=20)
    m = json.loads((snap.path / "manifest.json").read_text())
    assert m["num_rows"] == 50 and len(m["files"]) == 3
    assert sum(f["rows"] for f in m["files"]) == 50
    assert m["splits"]["train"] + m["splits"]["validation"] == 50
    assert sum(pq.read_metadata(snap.path / f["path"]).num_rows for f in m["files"]) == 50
    assert not [p for p in tmp_path.rglob(".staging-*")]


def test_split_is_a_function_of_content():
    ids = [f"{i:08x}" + "0" * 16 for i in range(0, 2**32, 2**24)]
    assert [split_of(i, 0.2) for i in ids] == [split_of(i, 0.2) for i in ids]
    share = np.mean([split_of(i, 0.2) == "validation" for i in ids])
    assert 0.1 < share < 0.3


def test_round_trip_of_pixels_and_labels(tmp_path):
    data = tiny_images(n=40)
    snap = publish(tmp_path, data)
    x, y = image_arrays(read_table(find_snapshot(tmp_path, snap.id)))
    order = np.argsort(image_table(data).column("id").to_numpy(zero_copy_only=False))
    got = np.argsort(read_table(snap).column("id").to_numpy(zero_copy_only=False))
    # stored as uint8: float pixels come back quantized to the nearest 1/255
    quantized = (np.rint(data.pixels * np.float32(255)) / np.float32(255)).astype(np.float32)
    assert x.dtype == np.float32 and np.array_equal(x[got], quantized[order])
    assert np.abs(x[got] - data.pixels[order]).max() <= 0.5 / 255 + 1e-7
    assert np.array_equal(y[got], data.labels[order])


def test_pixels_are_stored_as_uint8_and_uint8_sources_exactly(tmp_path):
    rng = np.random.default_rng(3)
    data = tiny_images(n=30)
    data.pixels = rng.integers(0, 256, size=(30, 1, 28, 28), dtype=np.uint8)
    snap = publish(tmp_path, data)
    table = read_table(snap)
    assert table.schema.field("pixels").type == pa.binary(28 * 28)  # C*H*W bytes a row
    assert snap.manifest["format_version"] == FORMAT_VERSION >= 3
    x, _ = image_arrays(table)
    ids = table.column("id").to_pylist()
    src = {r: i for i, r in enumerate(image_table(data).column("id").to_pylist())}
    order = [src[i] for i in ids]
    assert np.array_equal(np.rint(x * 255).astype(np.uint8), data.pixels[order])


@pytest.mark.parametrize(
    "value, problem",
    [(np.nan, "NaN or infinite pixels"), (np.inf, "NaN or infinite pixels"),
     (1.5, "pixels outside [0, 1]"), (-0.1, "pixels outside [0, 1]")],
)  # fmt: skip
def test_float_pixels_that_cannot_be_stored_are_refused_with_their_counts(value, problem):
    data = tiny_images(n=20)
    data.pixels[4, 0, 1, 1] = value
    data.pixels[4, 0, 2, 2] = value
    data.pixels[9, 0, 0, 0] = value
    with pytest.raises(DataSourceError, match="Float pixels must be finite and in") as e:
        image_table(data)
    assert f"{problem}: 3 value(s) in 2 image(s) (first: image 4)" in str(e.value)


def test_format_1_float_pixels_are_still_read():
    data = tiny_images(n=12)
    table = image_table(data)
    flat = pa.array(data.pixels.reshape(-1), pa.float32())
    legacy = table.set_column(
        table.schema.get_field_index("pixels"),
        "pixels",
        pa.ListArray.from_arrays(pa.array(np.arange(0, 13 * 784, 784, dtype=np.int32)), flat),
    )
    x, _ = image_arrays(legacy)
    assert np.array_equal(x, data.pixels)


def test_format_2_uint8_lists_are_still_read(tmp_path):
    data = tiny_images(n=12)
    table = image_table(data)
    values, lengths = pixel_values(table.column("pixels"))
    assert values.dtype == np.uint8 and lengths.tolist() == [784] * 12
    offsets = pa.array(np.arange(0, 13 * 784, 784, dtype=np.int32))
    legacy = table.set_column(
        table.schema.get_field_index("pixels"),
        "pixels",
        pa.ListArray.from_arrays(offsets, pa.array(values, pa.uint8())),
    )
    pq.write_table(legacy, tmp_path / "format2.parquet")  # as a format 2 part file holds it
    again = pq.read_table(tmp_path / "format2.parquet")
    assert np.array_equal(image_arrays(again)[0], image_arrays(table)[0])
    assert np.array_equal(pixel_values(again.column("pixels"))[0], values)


def test_pixel_values_of_chunks_slices_and_missing_rows():
    table = image_table(tiny_images(n=10))
    values, _ = pixel_values(table.column("pixels"))
    rows = values.reshape(10, 784)
    chunked = pa.chunked_array(
        [table.column("pixels").chunk(0)[:4], table.column("pixels").chunk(0)[4:]]
    )
    assert np.array_equal(pixel_values(chunked)[0], values)
    assert np.array_equal(pixel_values(table.column("pixels").chunk(0)[3:5])[0], rows[3:5].ravel())
    gappy = pa.array([rows[0].tobytes(), None, rows[2].tobytes()], pa.binary(784))
    got, lengths = pixel_values(gappy)
    assert lengths.tolist() == [784, 0, 784]
    assert np.array_equal(got, rows[[0, 2]].ravel())


def test_the_row_ids_are_the_sha256_of_the_pixel_bytes():
    data = tiny_images(n=5)
    table = image_table(data)
    stored = np.rint(data.pixels * 255).astype(np.uint8)
    want = [hashlib.sha256(stored[i].tobytes()).hexdigest()[:24] for i in range(5)]
    assert table.column("id").to_pylist() == want
    assert table.column("split").to_pylist() == [split_of(i, 0.2) for i in want]


def test_a_corrupted_part_is_detected(tmp_path):
    snap = publish(tmp_path, tiny_images())
    part = snap.path / snap.manifest["files"][0]["path"]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(SnapshotError, match="corrupted"):
        read_table(snap)


def test_a_snapshot_is_hashed_once_per_process_until_a_part_changes(tmp_path, monkeypatch):
    from aigc_core.data import snapshot as module

    snap = publish(tmp_path, tiny_images(n=50), rows_per_part=20)
    hashed = []
    real = module.sha256_file
    monkeypatch.setattr(module, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    first = read_table(snap)
    assert len(hashed) == 3  # every part, the first time
    again = read_table(find_snapshot(tmp_path, snap.id))  # another Snapshot object, same folder
    assert again.equals(first) and len(hashed) == 3  # not hashed again
    ref = snap.ref()
    assert ref.id == snap.id and ref.rows == 50 and ref.kind == "image" and ref.created is True
    assert read_table(module.open_snapshot(ref)).num_rows == 50 and len(hashed) == 3
    # a part rewritten in place (same size) is hashed again, and the change is caught
    part = snap.path / snap.manifest["files"][1]["path"]
    data = bytearray(part.read_bytes())
    data[-20] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="corrupted"):
        read_table(snap)
    assert len(hashed) > 3


def test_a_reference_to_another_snapshot_is_refused(tmp_path):
    from dataclasses import replace

    from aigc_core.data.snapshot import open_snapshot

    snap = publish(tmp_path, tiny_images())
    with pytest.raises(SnapshotError, match="not '0000000000000000'"):
        open_snapshot(replace(snap.ref(), id="0" * 16))


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        publish(tmp_path, tiny_images())
    assert [p for p in tmp_path.rglob("*") if p.is_file() or p.name.startswith(".")] == []


def test_empty_data_is_refused(tmp_path):
    data = tiny_images(n=10)
    data.pixels, data.labels = data.pixels[:0], data.labels[:0]
    with pytest.raises(SnapshotError, match="no rows"):
        publish(tmp_path, data)


def test_unknown_snapshot_id(tmp_path):
    with pytest.raises(SnapshotError, match="no snapshot with id 'nope'"):
        find_snapshot(tmp_path, "nope")


def test_list_snapshots_skips_staging_folders_and_strays(tmp_path):
    snap = publish(tmp_path, tiny_images())
    (tmp_path / "tiny" / ".staging-abc-123").mkdir()  # left by a killed writer
    (tmp_path / "tiny" / "half").mkdir()  # no manifest: never published
    assert [s.id for s in list_snapshots(tmp_path)] == [snap.id]
    assert list_snapshots(tmp_path / "missing") == []


def test_text_snapshots_are_content_addressed(tmp_path):
    def text_snap(texts, params=None):
        return write_snapshot(
            tmp_path, "t", text_table(texts), kind="text", source="test", params=params or {}
        )

    docs = [f"doc {i}" for i in range(30)]
    first = text_snap(docs)
    assert text_snap(list(docs)).id == first.id and not text_snap(docs).created
    assert text_snap(docs[:-1]).id != first.id
    assert text_snap(docs, {"unicode_form": "NFKC"}).id != first.id  # parameters count
    table = read_table(first)
    assert table.schema.equals(TEXT_SCHEMA)
    assert sorted(text_split(table, "train") + text_split(table, "validation")) == sorted(docs)


def test_the_id_does_not_depend_on_how_the_table_is_chunked():
    table = image_table(tiny_images(n=30))
    rechunked = pa.Table.from_batches(table.to_batches(max_chunksize=7))
    assert content_id(rechunked, {"p": 1}) == content_id(table, {"p": 1})
    assert content_id(table, {"p": 2}) != content_id(table, {"p": 1})


def test_big_tables_are_written_as_parts_in_parallel(tmp_path, monkeypatch):
    import aigc_core.data.snapshot as snapshot

    data = tiny_images(n=90)
    monkeypatch.setattr(snapshot, "PART_BYTES", image_table(data).nbytes // 4)
    monkeypatch.setattr(snapshot, "WRITERS", 2)
    snap = publish(tmp_path, data)
    assert len(snap.manifest["files"]) == 5  # a quarter of the bytes each, balanced by rows
    table = read_table(snap)
    assert table.column("id").to_pylist() == image_table(data).column("id").to_pylist()
    assert publish(tmp_path, data).id == snap.id
