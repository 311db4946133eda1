"""Every bad input of issue 3 through `aigc ingest`: a clear error naming the file and the
problem, a non-zero exit code, and the datasets folder exactly as it was."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from aigc import cli
from aigc_core.data import sources
from aigc_core.data.files import DataSourceError
from aigc_core.data.idx import IMAGES_MAGIC
from aigc_core.data.text import read_documents
from tests.conftest import tiny_images
from tests.unit.test_sources_idx import idx_bytes, write_mnist

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home that already holds one snapshot, so 'unchanged' is checked against real files."""
    h = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("src") / "ok.txt"
    src.write_text("".join(f"document number {n}, long enough to keep\n\n" for n in range(30)))
    r = aigc("ingest", "--dataset", "ok", "--path", str(src), "--home", str(h))
    assert r.exit_code == 0, r.stderr
    return h


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli.err, "width", 10_000)  # one line per message: no wrapped paths


def aigc(*args: str):
    return RUNNER.invoke(cli.app, list(args))


def tree(root):
    if not root.exists():
        return None
    return sorted(
        (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
    )


def fails(home, path, *expect: str, dataset="bad", extra=()):
    """Run an ingest that must fail; check the exit code, the message and the datasets folder."""
    before = tree(home / "datasets")
    r = aigc("ingest", "--dataset", dataset, "--path", str(path), "--home", str(home), *extra)
    assert r.exit_code != 0, r.stdout
    assert r.stdout == ""
    for e in expect:
        assert e in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert tree(home / "datasets") == before
    return r.stderr


def png_bytes(size=(16, 16), mode="L") -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    arr = rng.integers(0, 255, size=(size[1], size[0]), dtype=np.uint8)
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size=(64, 64)) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def image_folder(tmp_path, n=6):
    for i in range(n):
        (tmp_path / "cls").mkdir(parents=True, exist_ok=True)
        img = np.full((8, 8), i * 30, dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / "cls" / f"ok{i}.png")
    return tmp_path


# ------------------------------------------------------------------------- images


def test_truncated_png(home, tmp_path):
    image_folder(tmp_path)
    bad = tmp_path / "cls" / "cut.png"
    bad.write_bytes(png_bytes()[:-40])
    fails(home, tmp_path, str(bad), "truncated or corrupt")


def test_truncated_jpeg(home, tmp_path):
    image_folder(tmp_path)
    bad = tmp_path / "cls" / "cut.jpg"
    bad.write_bytes(jpeg_bytes()[:600])
    fails(home, tmp_path, str(bad), "truncated or corrupt")


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: what a decompression bomb shows
    Pillow before any data is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [10_000, 40_000])  # above the limit (warning), above 2x (error)
def test_decompression_bomb_is_refused_with_the_pixel_limit_on(home, tmp_path, side):
    assert Image.MAX_IMAGE_PIXELS is not None and side * side > Image.MAX_IMAGE_PIXELS
    image_folder(tmp_path)
    bomb = tmp_path / "cls" / "bomb.png"
    bomb.write_bytes(png_header_claiming(side, side))
    fails(home, tmp_path, str(bomb), "decompression bomb")
    assert Image.MAX_IMAGE_PIXELS is not None  # the limit stays on


def test_non_image_renamed_png(home, tmp_path):
    image_folder(tmp_path)
    fake = tmp_path / "cls" / "notes.png"
    fake.write_text("these are my notes, not a picture\n")
    fails(home, tmp_path, str(fake), "not a PNG or JPEG image")


def test_zero_byte_image(home, tmp_path):
    image_folder(tmp_path)
    empty = tmp_path / "cls" / "empty.png"
    empty.touch()
    fails(home, tmp_path, str(empty), "empty (0 bytes)")


def test_zero_byte_text_file(home, tmp_path):
    (tmp_path / "a.txt").write_text("fine text")
    (tmp_path / "b.txt").touch()
    fails(home, tmp_path, str(tmp_path / "b.txt"), "empty (0 bytes)")


def test_mixed_modes_and_sizes_are_converted_per_the_contract(home, tmp_path):
    rng = np.random.default_rng(1)
    for i, (mode, size) in enumerate([("L", (9, 30)), ("RGB", (50, 20)), ("RGBA", (7, 7))] * 4):
        shape = (size[1], size[0]) + (() if mode == "L" else (len(mode),))
        im = Image.fromarray(rng.integers(0, 255, size=shape, dtype=np.uint8), mode)
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        im.save(tmp_path / f"c{i % 2}" / f"{i}.png")
    r = aigc(
        "ingest", "--dataset", "mixed", "--path", str(tmp_path), "--image-size", "10",
        "--mode", "RGB", "--json", "--home", str(home),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    from aigc_core.data.snapshot import find_snapshot

    assert find_snapshot(home / "datasets", out["snapshot_id"]).manifest["image_shape"] == [
        3, 10, 10,
    ]  # fmt: skip


def test_nan_or_inf_pixels_are_blocked_before_anything_is_written(home, monkeypatch):
    def poisoned(**_):
        data = tiny_images(n=40)
        data.pixels[3, 0, 1, 1] = np.nan
        data.pixels[8, 0, 2, 2] = np.inf
        return data

    monkeypatch.setitem(sources.IMAGE_SOURCES, "poisoned", poisoned)
    before = tree(home / "datasets")
    r = aigc("ingest", "--dataset", "poisoned", "--home", str(home))
    assert r.exit_code == 1
    # uint8 snapshots cannot hold them: refused while the table is built, with their counts
    assert "NaN or infinite pixels: 2 value(s) in 2 image(s)" in r.stderr
    assert "Nothing was written" in r.stderr
    assert tree(home / "datasets") == before


def test_nan_or_inf_in_a_numeric_column_chosen_as_text(home, tmp_path):
    f = tmp_path / "scores.parquet"
    pq.write_table(
        pa.table({"text": ["a", "b", "c"], "score": [1.0, float("nan"), float("inf")]}), f
    )
    fails(
        home,
        f,
        str(f),
        "column 'score' holds double values, not text",
        extra=["--text-column", "score"],
    )


def test_null_texts_are_refused(home, tmp_path):
    f = tmp_path / "gaps.parquet"
    pq.write_table(pa.table({"text": ["a fine document", None, "another"]}), f)
    fails(home, f, str(f), "1 missing value(s), first at row 1")


def test_empty_image_folder(home, tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.md").write_text("no images here")
    fails(home, tmp_path, str(tmp_path), "no PNG or JPEG files found", extra=["--kind", "image"])


def test_text_that_is_empty_after_cleaning(home, tmp_path):
    f = tmp_path / "blank.txt"
    f.write_text("   \n\n\t\n")
    fails(home, f, str(f), "no documents left after cleaning")


def test_an_empty_split_is_blocked(home, tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("a single document cannot fill two splits")
    fails(home, f, f"from {f}", "an empty train or validation split", "Nothing was written")


def test_non_utf8_text_is_rejected_by_default(home, tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"fine line\ncaf\xe9\n")
    fails(home, f, f"{f}: line 2", "not valid UTF-8", "--bad-bytes replace")


def test_nul_bytes_are_rejected_by_default(home, tmp_path):
    f = tmp_path / "nul.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "bad\x00"}\n')
    fails(home, f, f"{f}: line 2", "NUL bytes")


def test_a_100_mb_line_is_refused_with_bounded_memory(home, tmp_path):
    f = tmp_path / "huge.jsonl"
    block = b"x" * (1 << 20)
    with open(f, "wb") as out:
        out.write(b'{"text": "')
        for _ in range(100):
            out.write(block)
        out.write(b'"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(DataSourceError, match="line 1 is longer than 1,048,576 bytes"):
            list(read_documents(f))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * (1 << 20), f"peak {peak:,} bytes reading a 100 MB line"
    fails(home, f, str(f), "line 1 is longer than")


def test_labels_out_of_range(home, tmp_path):
    labels = np.arange(20) % 10
    labels[5] = 42
    write_mnist(tmp_path, n=20, labels=labels)
    fails(
        home, tmp_path, "train-labels-idx1-ubyte.gz", "label(s) out of range 0..9",
        "42 at index 5", dataset="mnist",
    )  # fmt: skip


@pytest.mark.parametrize(
    "name, content",
    [
        ("renamed.jsonl", b'{"body": "text under another name"}\n'),
        ("renamed.csv", b"id,body\n1,text under another name\n"),
    ],
)
def test_missing_or_renamed_text_column(home, tmp_path, name, content):
    f = tmp_path / name
    f.write_bytes(content)
    msg = fails(home, f, str(f), "'text'", "--text-column")
    assert "body" in msg  # the columns that are there are named


def test_renamed_parquet_column(home, tmp_path):
    f = tmp_path / "renamed.parquet"
    pq.write_table(pa.table({"content": ["a", "b"]}), f)
    fails(home, f, str(f), "no column 'text' (columns: content)")


def test_idx_with_the_wrong_magic_number(home, tmp_path):
    images, *_ = write_mnist(tmp_path, n=10, gz=False)
    raw = bytearray(images.read_bytes())
    raw[:4] = struct.pack(">i", 2049)  # a labels magic in an images file
    images.write_bytes(bytes(raw))
    fails(home, tmp_path, str(images), "wrong magic number 2049", "2051", dataset="mnist")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx(home, tmp_path, gz):
    images, *_ = write_mnist(tmp_path, n=10, gz=gz)
    data = images.read_bytes()
    images.write_bytes(data[: len(data) // 2])
    fails(home, tmp_path, str(images), "truncated", dataset="mnist")


def test_idx_with_trailing_bytes(home, tmp_path):
    images, *_ = write_mnist(tmp_path, n=10, gz=False)
    images.write_bytes(images.read_bytes() + b"junk")
    fails(home, tmp_path, str(images), "the file is longer", dataset="mnist")


def test_idx_header_claiming_gigabytes(home, tmp_path):
    write_mnist(tmp_path, n=10)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    header = struct.pack(">iiii", IMAGES_MAGIC, 10**6, 28_000, 28_000)
    images.write_bytes(gzip.compress(header + idx_bytes(np.zeros((1, 1, 1)), 2051)))
    fails(home, tmp_path, str(images), "the header is corrupt", dataset="mnist")


def test_a_symlink_escaping_the_folder(home, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "private.png").write_bytes(png_bytes())
    folder = image_folder(tmp_path / "in")
    link = folder / "cls" / "innocent.png"
    link.symlink_to(outside / "private.png")
    fails(home, folder, str(link), "outside the input folder")


def test_a_folder_symlink_escaping_the_folder(home, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "doc.txt").write_text("not yours")
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine\n\nand more of mine")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    fails(home, folder, str(folder / "linked"), "outside the input folder")


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_an_over_long_line_in_other_text_formats(home, tmp_path, suffix):
    f = tmp_path / f"long{suffix}"
    with open(f, "wb") as out:
        out.write(b"text\n" if suffix == ".csv" else b"")
        out.write(b"y" * (3 << 20) + b"\n")
    fails(home, f, str(f), "longer than 1,048,576 bytes" if suffix == ".txt" else "cannot be read")


def test_an_idx_symlink_escaping_the_folder(home, tmp_path):
    outside, *_ = write_mnist(tmp_path / "secret", n=10)
    folder = tmp_path / "in"
    write_mnist(folder, n=10)
    link = folder / outside.name
    link.unlink()
    link.symlink_to(outside)
    fails(home, folder, str(link), "outside the input folder", dataset="mnist")


def test_an_idx_file_with_a_zero_dimension(home, tmp_path):
    images, *_ = write_mnist(tmp_path, n=10, gz=False)
    images.write_bytes(struct.pack(">iiii", IMAGES_MAGIC, 10, 0, 28))
    fails(home, tmp_path, str(images), "zero dimension (10, 0, 28)", dataset="mnist")


# ------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["../../escaped", "ABSOLUTE", "a/b", "o'reilly", "*"])
def test_a_dataset_name_that_is_not_a_name(home, tmp_path, name):
    """`--dataset ../../etc` (or an absolute path) wrote the snapshot outside the home."""
    name = str(tmp_path / "escaped") if name == "ABSOLUTE" else name
    (tmp_path / "ok.txt").write_text("".join(f"document {n}, long enough\n\n" for n in range(30)))
    before = tree(home / "datasets")
    r = aigc("ingest", "--dataset", name, "--path", str(tmp_path / "ok.txt"), "--home", str(home))
    assert r.exit_code == 2 and r.stdout == ""
    assert f"invalid dataset name {name!r}" in r.stderr and "1-64 characters" in r.stderr
    assert tree(home / "datasets") == before
    assert not (home.parent / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_ingest_gated_checks_the_name_itself(home, tmp_path):
    """The ingest task (and so the flows) check the name too, not only the CLI."""
    from aigc_core.names import InvalidName
    from aigc_core.paths import Home
    from tasks.data import ingest_gated

    before = tree(home / "datasets")
    with pytest.raises(InvalidName, match="invalid dataset name '../x'"):
        ingest_gated(Home(home), "../x", path=tmp_path)
    assert tree(home / "datasets") == before


def test_an_uppercase_dataset_name_is_stored_in_lowercase(home, tmp_path):
    docs = "".join(f"shouted doc {n}, long enough\n\n" for n in range(30))
    (tmp_path / "ok.txt").write_text(docs)
    r = aigc(
        "ingest", "--dataset", "MyDocs", "--path", str(tmp_path / "ok.txt"), "--json",
        "--home", str(home),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    assert out["dataset"] == "mydocs"
    assert (home / "datasets" / "mydocs" / out["snapshot_id"]).is_dir()


# -------------------------------------------------------------------------- audio


def audio_folder(tmp_path, n=4):
    import soundfile as sf

    t = np.arange(4096) / 8000
    for i in range(n):
        (tmp_path / "a").mkdir(parents=True, exist_ok=True)
        tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t)
        sf.write(tmp_path / "a" / f"ok{i}.wav", tone, 8000, subtype="PCM_16")
    return tmp_path


def test_a_text_file_named_wav_is_refused_through_the_cli(home, tmp_path):
    audio_folder(tmp_path)
    bad = tmp_path / "a" / "notes.wav"
    bad.write_text("this is not a recording\n")
    fails(home, tmp_path, str(bad), "not a readable WAV or FLAC")


def test_a_truncated_wav_is_refused_through_the_cli(home, tmp_path):
    audio_folder(tmp_path)
    whole = (tmp_path / "a" / "ok0.wav").read_bytes()
    bad = tmp_path / "a" / "cut.wav"
    bad.write_bytes(whole[: len(whole) // 2])
    fails(home, tmp_path, str(bad), "truncated WAV")


def test_nan_in_a_float_wav_is_refused_through_the_cli(home, tmp_path):
    import soundfile as sf

    audio_folder(tmp_path)
    x = np.zeros(4096, dtype=np.float32)
    x[100] = np.nan
    bad = tmp_path / "a" / "nan.wav"
    sf.write(bad, x, 8000, subtype="FLOAT")
    fails(home, tmp_path, str(bad), "NaN or infinite")
