"""Safe access to user-supplied files: errors that name the file, a folder walk that refuses
symlinks escaping the folder, and a line reader whose memory is bounded by a line limit. Also the
two buffer helpers the readers and the snapshot writer share: row hashes over one buffer, and the
buffers of an Arrow string array.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 1 << 20  # 1 MiB: one JSONL record or one text line
# Arrow's default pool (mimalloc) keeps freed segments resident, which doubled an ingest's peak
# memory; the system allocator gives them back (benchmarks/ingest_throughput.py measures it).
# Every Arrow allocation of an ingest goes here.
POOL = pa.system_memory_pool()


class DataSourceError(ValueError):
    """Input data that cannot be ingested; the message names the file, the problem and the fix."""


def require_exists(path: Path) -> Path:
    if not path.exists():
        raise DataSourceError(f"{path}: no such file or folder; check --path")
    return path


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def refuse_link_out_of(p: Path, root: Path, real_root: Path | None = None) -> Path:
    """`p`'s resolved path; a DataSourceError when that lies outside the folder `root`."""
    target = p.resolve()
    if not _inside(target, real_root or Path(root).resolve()):
        raise DataSourceError(
            f"{p}: symlink to {target}, which is outside the input folder {root}; "
            f"copy the file into the folder instead of linking to it"
        )
    return target


def walk_files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files under `root` whose suffix (lowercased) is in `suffixes`, sorted by relative path.

    A symlink (file or folder) whose target lies outside `root` is an error: an input folder
    must not read files from elsewhere on the machine. A file symlink that stays inside is read;
    a folder symlink that stays inside is skipped (its files are reached through their real path).
    """
    root = require_exists(Path(root))
    if not root.is_dir():
        raise DataSourceError(f"{root}: expected a folder")
    real_root = root.resolve()
    wanted = {s.lower() for s in suffixes}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = here / name
            if p.is_symlink():
                target = refuse_link_out_of(p, root, real_root)
                if target.is_dir():  # inside the folder: os.walk reaches its files anyway
                    continue
            if name in filenames and p.suffix.lower() in wanted:
                found.append(p)
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(found, key=lambda q: q.relative_to(root).as_posix())


def read_lines(path: Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[bytes]:
    """Yield the lines of a file as bytes (without the newline), never holding more than
    `max_line_bytes` of one line in memory: a longer line is an error naming its number."""
    with open(path, "rb") as f:
        number = 0
        while True:
            line = f.readline(max_line_bytes + 1)
            if not line:
                return
            number += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                raise DataSourceError(
                    f"{path}: line {number} is longer than {max_line_bytes:,} bytes; split it "
                    f"into smaller records or raise the line limit (max_line_bytes)"
                )
            yield line.rstrip(b"\r\n") if line.endswith(b"\n") else line


def sha256_rows(buffer, offsets: np.ndarray) -> np.ndarray:
    """(N, 32) uint8: the sha256 of each row `buffer[offsets[i]:offsets[i + 1]]` (one C call per
    row over a view of the buffer: no row is copied)."""
    view, sha = memoryview(buffer), hashlib.sha256
    bounds = offsets.tolist()
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    digests = b"".join([sha(view[a:b]).digest() for a, b in pairs])
    return np.frombuffer(digests, dtype=np.uint8).reshape(len(bounds) - 1, 32)


def string_buffers(array: pa.Array) -> tuple[pa.Buffer | bytes, np.ndarray]:
    """(data, offsets) of a string or binary array: row i is data[offsets[i]:offsets[i + 1]]."""
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    kind = np.int64 if wide else np.int32
    _, offsets, data = array.buffers()[:3]
    n = len(array)
    if offsets is None:  # an empty array may have no buffers
        return b"", np.zeros(n + 1, dtype=np.int64)
    at = np.frombuffer(offsets, kind, n + 1, array.offset * np.dtype(kind).itemsize)
    return (data if data is not None else b""), at.astype(np.int64)
