"""MNIST-style IDX files: parsing (raw or gzip), and the MNIST / Fashion-MNIST downloads.

IDX layout: a big-endian header of two zero bytes, a type code (0x08: unsigned byte) and the
number of dimensions, then one big-endian int32 per dimension, then the values. MNIST's images
have magic 2051 (0x00000803, three dims N x 28 x 28), its labels 2049 (0x00000801, one dim N).

The downloads verify the published MD5 of every file before it is used; a file that does not
match is never moved into the cache. Offline, the download fails within seconds and the error says
which files to put where.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import struct
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from aigc_core.data.files import (
    DataSourceError,
    refuse_link_out_of,
    require_exists,
    walk_files,
)

log = logging.getLogger(__name__)

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
MAX_IDX_BYTES = 1 << 31  # refuse headers that claim more than 2 GiB of values
DOWNLOAD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Mirror:
    urls: tuple[str, ...]
    md5: dict[str, str]  # file name -> published MD5
    classes: tuple[str, ...]


# The files and MD5s published with each dataset (the same ones torchvision verifies).
MIRRORS = {
    "mnist": Mirror(
        urls=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        classes=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": Mirror(
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_into(f, buffer: memoryview, chunk: int = 1 << 22) -> int:
    """Fill `buffer` from `f` in chunks (a gzip stream would otherwise build the whole body as
    one more bytes object); returns the number of bytes read."""
    pos = 0
    while pos < len(buffer):
        n = f.readinto(buffer[pos : pos + chunk])
        if not n:
            break
        pos += n
    return pos


def _header(f, path: Path, expected_magic: int, kind: str) -> tuple[int, ...]:
    """Parse and check an IDX header; returns the dimensions."""
    head = f.read(4)
    if len(head) < 4:
        raise DataSourceError(f"{path}: truncated IDX header ({len(head)} of 4 bytes)")
    (magic,) = struct.unpack(">i", head)
    if magic != expected_magic:
        raise DataSourceError(
            f"{path}: wrong magic number {magic} (0x{magic & 0xFFFFFFFF:08x}); an IDX "
            f"{kind} file starts with {expected_magic}. Is this the right file?"
        )
    ndim = head[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataSourceError(f"{path}: truncated IDX header (the dimensions are cut off)")
    dims = struct.unpack(f">{ndim}i", raw_dims)
    if any(d < 0 for d in dims):
        raise DataSourceError(f"{path}: negative dimension in the IDX header {dims}")
    if 0 in dims:
        raise DataSourceError(
            f"{path}: the IDX header announces a zero dimension {dims}, so the file holds no "
            f"{kind}s; the header is corrupt or the file is empty: replace it"
        )
    size = int(np.prod(dims, dtype=np.int64))
    if size > MAX_IDX_BYTES:
        raise DataSourceError(
            f"{path}: the IDX header claims {size:,} bytes of data (limit "
            f"{MAX_IDX_BYTES:,}); the header is corrupt or the file is not MNIST-sized"
        )
    return dims


@contextlib.contextmanager
def _open_idx(path: Path, expected_magic: int) -> Iterator[tuple[BinaryIO, tuple[int, ...]]]:
    """An IDX file (raw or gzip) positioned after its checked header, and its dimensions."""
    path = require_exists(Path(path))
    kind = "image" if expected_magic == IMAGES_MAGIC else "label"
    if path.stat().st_size == 0:
        raise DataSourceError(f"{path}: the file is empty (0 bytes); expected an IDX {kind} file")
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as f:
            yield f, _header(f, path, expected_magic, kind)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataSourceError(
            f"{path}: the gzip stream is truncated or corrupt ({e}); download or copy it again"
        ) from None


def idx_shape(path: Path, expected_magic: int) -> tuple[int, ...]:
    """The dimensions an IDX file's header announces (only the header is read)."""
    with _open_idx(path, expected_magic) as (_, dims):
        return dims


def read_idx(path: Path, expected_magic: int, out: np.ndarray | None = None) -> np.ndarray:
    """The values of an unsigned-byte IDX file (raw or gzip) as a uint8 array of its shape, read
    into `out` (a flat uint8 array of the right size, e.g. a slice of a larger one) when given."""
    with _open_idx(path, expected_magic) as (f, dims):
        size = int(np.prod(dims, dtype=np.int64))
        body = np.empty(size, dtype=np.uint8) if out is None else out
        if body.size != size:
            raise ValueError(f"{path} holds {size:,} values; the buffer given holds {body.size:,}")
        got = _read_into(f, memoryview(body))  # filled in place: no second copy
        if got < size:
            raise DataSourceError(
                f"{path}: truncated: the header announces {dims} ({size:,} bytes of values) "
                f"but only {got:,} bytes follow; download or copy the file again"
            )
        if f.read(1):
            raise DataSourceError(
                f"{path}: {size:,} bytes of values expected after the header, but the file "
                f"is longer; it is not a valid IDX file"
            )
    return body.reshape(dims)


def _find(files: dict[str, Path], stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if name in files:
            return files[name]
    return None


def idx_pairs(path: Path) -> list[tuple[Path, Path]]:
    """(images, labels) file pairs at `path`: a folder holding the standard MNIST file names
    (train-* and/or t10k-*, raw or .gz), or one images file whose labels file is named like it
    with `images-idx3` replaced by `labels-idx1`. A folder is read through `walk_files`, so a
    symlink in it whose target lies outside the folder is refused, as for image folders."""
    path = require_exists(Path(path))
    if path.is_file():
        labels = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        if labels == path or not labels.is_file():
            raise DataSourceError(
                f"{path}: no labels file next to it (expected {labels.name}); give the folder "
                f"holding both the images and the labels IDX files"
            )
        refuse_link_out_of(labels, path.parent)  # found, not given: it must stay in the folder
        return [(path, labels)]
    top = {p.name: p for p in walk_files(path, ("", ".gz")) if p.parent == path}
    pairs = []
    for prefix in ("train", "t10k"):
        images = _find(top, f"{prefix}-images-idx3-ubyte")
        labels = _find(top, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            pairs.append((images, labels))
        elif images or labels:
            have, missing = (images, "labels") if images else (labels, "images")
            raise DataSourceError(
                f"{have}: its {missing} file ({prefix}-{missing}-idx*-ubyte[.gz]) is missing "
                f"from {path}"
            )
    if not pairs:
        raise DataSourceError(
            f"{path}: no MNIST-format IDX files found; expected train-images-idx3-ubyte[.gz] "
            f"and train-labels-idx1-ubyte[.gz] (and/or the t10k-* pair)"
        )
    return pairs


def load_idx_pairs(
    pairs: list[tuple[Path, Path]], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W) and int64 labels (N,) from IDX pairs, checked against each other.
    The headers are read first, so every pair's images go straight into one array."""
    shapes = [idx_shape(images_path, IMAGES_MAGIC) for images_path, _ in pairs]
    for (images_path, _), shape in zip(pairs, shapes, strict=True):
        if len(shape) != 3:
            raise DataSourceError(f"{images_path}: expected 3 dimensions (N, H, W), got {shape}")
    if len({shape[1:] for shape in shapes}) != 1:
        raise DataSourceError(
            f"IDX files have different image sizes {[shape[1:] for shape in shapes]}: "
            f"{[str(p[0]) for p in pairs]}"
        )
    h, w = shapes[0][1:]
    images = np.empty((sum(shape[0] for shape in shapes), h, w), dtype=np.uint8)
    flat, start, ys = images.reshape(-1), 0, []
    for (images_path, labels_path), (count, _, _) in zip(pairs, shapes, strict=True):
        read_idx(images_path, IMAGES_MAGIC, out=flat[start * h * w : (start + count) * h * w])
        y = read_idx(labels_path, LABELS_MAGIC)
        if y.ndim != 1:
            raise DataSourceError(f"{labels_path}: expected 1 dimension (N,), got {y.shape}")
        if count != len(y):
            raise DataSourceError(
                f"{images_path} holds {count} images but {labels_path} holds {len(y)} labels"
            )
        bad = np.flatnonzero(y >= num_classes)
        if bad.size:
            raise DataSourceError(
                f"{labels_path}: {bad.size} label(s) out of range 0..{num_classes - 1}, e.g. "
                f"{int(y[bad[0]])} at index {int(bad[0])}; fix the labels file"
            )
        ys.append(y.astype(np.int64))
        start += count
    return images, np.concatenate(ys)


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _download(urls: tuple[str, ...], name: str, md5: str, dest: Path, all_names: list[str]) -> None:
    """Fetch `name` from the first mirror that answers, verify its MD5, then move it into place."""
    errors = []
    for base in urls:
        tmp = dest.with_name(f".{name}.{uuid.uuid4().hex}.part")
        try:
            with (
                urllib.request.urlopen(base + name, timeout=DOWNLOAD_TIMEOUT_S) as r,
                open(tmp, "wb") as f,
            ):
                while block := r.read(1 << 20):
                    f.write(block)
            got = md5_file(tmp)
            if got != md5:
                errors.append(f"{base}{name}: MD5 {got}, expected {md5}")
                continue
            os.replace(tmp, dest)
            log.info("downloaded %s from %s", name, base)
            return
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            errors.append(f"{base}{name}: {getattr(e, 'reason', e)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataSourceError(
        f"could not download {name} ({'; '.join(errors)}). Offline? Put the files "
        f"{', '.join(all_names)} in {dest.parent}, "
        f"or pass --path to a folder holding them"
    )


def fetch(dataset: str, cache_dir: Path) -> Path:
    """The folder holding `dataset`'s four verified files, downloading the missing ones."""
    mirror = MIRRORS[dataset]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, md5 in mirror.md5.items():
        dest = cache_dir / name
        if dest.is_file():
            got = md5_file(dest)
            if got == md5:
                continue
            raise DataSourceError(
                f"{dest}: MD5 {got} does not match the published {md5}; delete the file "
                f"to download it again, or replace it with the original"
            )
        _download(mirror.urls, name, md5, dest, list(mirror.md5))
    return cache_dir
