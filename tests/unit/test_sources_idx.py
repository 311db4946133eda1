"""MNIST-format IDX files: parsing, --path ingest, the checksum-verified download."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from aigc_core.data import idx
from aigc_core.data.files import DataSourceError
from aigc_core.data.ingest import prepare, publish
from aigc_core.data.snapshot import image_arrays, image_table, read_table
from aigc_core.data.sources import load_path


def idx_bytes(values: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">i", magic) + struct.pack(f">{values.ndim}i", *values.shape)
    return header + values.astype(np.uint8).tobytes()


def write_mnist(folder, n=60, seed=0, gz=True, prefix="train", labels=None):
    """A small MNIST-format pair: n 28x28 images (class k has a bar at a k-specific row)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10 if labels is None else np.asarray(labels)
    x = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, 2 + 2 * (k % 10) : 4 + 2 * (k % 10), 3:-3] = 255
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
    labels_path = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
    write = gzip.compress if gz else (lambda b: b)
    images.write_bytes(write(idx_bytes(x, idx.IMAGES_MAGIC)))
    labels_path.write_bytes(write(idx_bytes(y, idx.LABELS_MAGIC)))
    return images, labels_path, x, y


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    images, labels, x, y = write_mnist(tmp_path, n=12, gz=gz)
    assert np.array_equal(idx.read_idx(images, idx.IMAGES_MAGIC), x)
    assert np.array_equal(idx.read_idx(labels, idx.LABELS_MAGIC), y)


def test_train_and_t10k_pairs_are_both_read(tmp_path):
    write_mnist(tmp_path, n=30, seed=0, prefix="train")
    write_mnist(tmp_path, n=20, seed=1, prefix="t10k", gz=False)
    p = prepare("mnist", path=tmp_path)
    assert p.table.num_rows == 50
    assert p.extra["image_shape"] == [1, 28, 28] and p.extra["label_set"] == list(range(10))


def test_mnist_path_ingests_pixels_scaled_to_unit_range(tmp_path):
    _, _, x, y = write_mnist(tmp_path / "in", n=40)
    snap = publish(prepare("mnist", path=tmp_path / "in"), tmp_path / "datasets")
    pixels, labels = image_arrays(read_table(snap))
    assert pixels.shape == (40, 1, 28, 28) and pixels.dtype == np.float32
    # rows are in source order: the snapshot holds exactly x / 255 and y
    assert np.allclose(pixels[:, 0], x / 255.0) and np.array_equal(labels, y)


def test_image_size_resizes(tmp_path):
    write_mnist(tmp_path, n=10)
    p = prepare("my-idx", path=tmp_path, image_size=16)
    assert p.extra["image_shape"] == [1, 16, 16]


def mirror_folder(tmp_path, corrupt: str | None = None):
    """A file:// mirror of four tiny IDX files, with the MD5s of the intended content."""
    src = tmp_path / "mirror"
    write_mnist(src, n=20, prefix="train")
    write_mnist(src, n=10, prefix="t10k", seed=3)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in src.iterdir()}
    if corrupt:
        (src / corrupt).write_bytes(b"tampered")
    return idx.Mirror(urls=(src.as_uri() + "/",), md5=md5, classes=tuple("0123456789"))


def test_download_verifies_checksums_and_caches(tmp_path, monkeypatch):
    monkeypatch.setitem(idx.MIRRORS, "mnist", mirror_folder(tmp_path))
    cache = tmp_path / "cache"
    p = prepare("mnist", downloads=cache)
    assert p.table.num_rows == 30
    assert sorted(f.name for f in (cache / "mnist").iterdir()) == sorted(idx.MIRRORS["mnist"].md5)
    # the cache is used: with the mirror gone, the same data comes back
    monkeypatch.setitem(
        idx.MIRRORS, "mnist", idx.Mirror(("file:///nonexistent/",), idx.MIRRORS["mnist"].md5, ())
    )
    assert prepare("mnist", downloads=cache).id == p.id


def test_a_download_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    bad = "t10k-labels-idx1-ubyte.gz"
    monkeypatch.setitem(idx.MIRRORS, "mnist", mirror_folder(tmp_path, corrupt=bad))
    with pytest.raises(DataSourceError, match=f"{bad}: MD5 .* expected"):
        prepare("mnist", downloads=tmp_path / "cache")
    assert not (tmp_path / "cache" / "mnist" / bad).exists()
    assert not [p for p in (tmp_path / "cache" / "mnist").iterdir() if p.name.endswith(".part")]


def test_a_tampered_cached_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(idx.MIRRORS, "mnist", mirror_folder(tmp_path))
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    (cache / "train-images-idx3-ubyte.gz").write_bytes(b"not the original")
    with pytest.raises(DataSourceError, match="does not match the published"):
        prepare("mnist", downloads=tmp_path / "cache")


def test_offline_download_fails_fast_and_says_where_to_put_the_files(tmp_path, monkeypatch):
    import time

    # port 9 (discard) on localhost: the connection is refused at once, as offline
    real = idx.MIRRORS["fashion-mnist"]
    monkeypatch.setitem(
        idx.MIRRORS, "fashion-mnist", idx.Mirror(("http://127.0.0.1:9/",), real.md5, real.classes)
    )
    start = time.monotonic()
    with pytest.raises(DataSourceError) as e:
        prepare("fashion-mnist", downloads=tmp_path / "dl")
    assert time.monotonic() - start < 5
    msg = str(e.value)
    assert "could not download train-images-idx3-ubyte.gz" in msg
    assert str(tmp_path / "dl" / "fashion-mnist") in msg and "--path" in msg
    assert "t10k-labels-idx1-ubyte.gz" in msg


def test_the_published_checksums_are_the_known_ones():
    # FACTS.md: t10k images gz, md5 9fb629c4189551a2d022fa330f9573f3
    assert idx.MIRRORS["mnist"].md5["t10k-images-idx3-ubyte.gz"] == (
        "9fb629c4189551a2d022fa330f9573f3"
    )
    assert len(idx.MIRRORS["fashion-mnist"].classes) == 10


def test_idx_pixels_stay_uint8_with_no_float_copy(tmp_path):
    _, _, x_train, _ = write_mnist(tmp_path, n=30, prefix="train")
    _, _, x_test, _ = write_mnist(tmp_path, n=10, prefix="t10k", seed=1)
    data = load_path(tmp_path)
    assert data.pixels.dtype == np.uint8 and data.pixels.shape == (40, 1, 28, 28)
    assert np.array_equal(data.pixels[:, 0], np.concatenate([x_train, x_test]))
    pixels = image_table(data).column("pixels").chunk(0)
    assert pixels.buffers()[1].address == data.pixels.ctypes.data  # the table uses those bytes


def test_idx_symlink_escaping_the_folder_is_refused(tmp_path):
    """The IDX finder followed links out of the folder (it tested `is_file()`); it walks the
    folder like image folders do now, so a link whose target is elsewhere is an error."""
    outside, _, _, _ = write_mnist(tmp_path / "elsewhere", n=10)
    folder = tmp_path / "in"
    _, labels, _, _ = write_mnist(folder, n=10)
    (folder / outside.name).unlink()
    (folder / outside.name).symlink_to(outside)
    for read in (idx.idx_pairs, load_path, lambda p: prepare("my-idx", path=p)):
        with pytest.raises(DataSourceError, match="outside the input folder") as e:
            read(folder)
        assert str(folder / outside.name) in str(e.value)


def test_idx_labels_found_beside_a_given_images_file_must_not_link_out(tmp_path):
    """Given the images file itself, the labels file is found next to it: a link from there to
    elsewhere is refused too, while the images file the user named may be a link."""
    _, outside_labels, _, _ = write_mnist(tmp_path / "elsewhere", n=10)
    images, labels, _, _ = write_mnist(tmp_path / "in", n=10)
    labels.unlink()
    labels.symlink_to(outside_labels)
    with pytest.raises(DataSourceError, match="outside the input folder") as e:
        idx.idx_pairs(images)
    assert str(labels) in str(e.value)


def test_idx_symlink_inside_the_folder_is_read(tmp_path):
    folder = tmp_path / "in"
    images, labels, x, y = write_mnist(folder / "real", n=10)
    (folder / images.name).symlink_to(images)
    (folder / labels.name).symlink_to(labels)
    assert idx.idx_pairs(folder) == [(folder / images.name, folder / labels.name)]
    assert np.array_equal(load_path(folder).pixels[:, 0], x)


@pytest.mark.parametrize("dims", [(10, 0, 28), (10, 28, 0), (0, 28, 28)])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_zero_dimension_is_refused_naming_the_file(tmp_path, dims, gz):
    """A zero height or width failed in torch's resize with a message naming no file."""
    _, labels, _, _ = write_mnist(tmp_path, n=dims[0], gz=gz)
    images = tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}"
    header = struct.pack(">i", idx.IMAGES_MAGIC) + struct.pack(">3i", *dims)
    images.write_bytes(gzip.compress(header) if gz else header)
    with pytest.raises(DataSourceError, match="zero dimension") as e:
        prepare("my-idx", path=tmp_path)
    assert str(images) in str(e.value)


def test_idx_labels_file_with_a_zero_dimension_is_refused_naming_the_file(tmp_path):
    _, labels, _, _ = write_mnist(tmp_path, n=10, gz=False)
    labels.write_bytes(struct.pack(">ii", idx.LABELS_MAGIC, 0))
    with pytest.raises(DataSourceError, match="zero dimension") as e:
        idx.read_idx(labels, idx.LABELS_MAGIC)
    assert str(labels) in str(e.value) and "no labels" in str(e.value)
