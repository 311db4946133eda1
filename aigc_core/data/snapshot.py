"""Content-addressed Parquet snapshots (DESIGN.md section 3).

A snapshot is `datasets/<name>/<id>/` holding Parquet part files and `manifest.json`. Its id is a
sha256 over the preprocessing parameters and every row's content, so ingesting the same data twice
gives the same id and writes nothing. It is built in a staging directory and renamed into place.

Image rows: `id` (sha256 of the pixel bytes), `split` (train or validation, from the id, so equal
images always share a split), `label`, `height`, `width`, `channels`, `pixels` (the C*H*W uint8
values 0..255, row-major, as one fixed_size_binary value; `image_arrays` gives float32 in [0, 1]).
Sources that hold uint8 (IDX files, image folders) are stored as they are; float sources in
[0, 1] are quantized with rint(x * 255), and float pixels that are NaN, infinite or outside
[0, 1] are refused before anything is written. Every reader of the pixel column goes through
`pixel_values`, which also reads the older layouts: format 2 (list<uint8>) and format 1
(list<float32> in [0, 1]).

Text rows: `id` (sha256 of the UTF-8 text), `split` (from the id, as for images), `text` (one
cleaned document per row). `text_split(table, split)` gives a trainer the documents of a split.

Audio rows: `id` (sha256 of the PCM bytes), `split` (from the id), `label`, `label_name`,
`sample_rate` (Hz, one rate per snapshot), `source_file` (the file's path relative to the
ingested folder; null for a built-in dataset), `pcm` (the clip's L int16 samples, little-endian,
as one fixed_size_binary(2L) value). Fixed-size binary rather than list<int16>: the bytes hashed
for the id are exactly the bytes stored (no per-value conversion, so the id cannot drift with a
reader's integer handling), Parquet stores it as one FIXED_LEN_BYTE_ARRAY per row with no
repetition levels (a list<int16> is written as int32 values plus levels), and `pcm_values` reads
it back as an (N, L) int16 view of the Arrow buffer without a copy.
`aigc_core.data.audio.audio_data(table)` gives a trainer an `AudioData`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aigc_core import names
from aigc_core.atomic import sha256_file, staged_dir
from aigc_core.data.audio import AudioData
from aigc_core.data.files import (
    POOL,
    DataSourceError,
    sha256_rows,
    string_buffers,
)
from aigc_core.data.sources import ImageData
from aigc_core.memory import release_memory
from aigc_core.stages import SnapshotRef

log = logging.getLogger(__name__)

# 3: pixels as fixed_size_binary(C*H*W) (2: list<uint8>, 1: list<float32> in [0, 1]); Parquet
# has no 8-bit type, so a list<uint8> was written as int32 values with repetition levels
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
ROW_GROUP_BYTES = 1 << 20  # ~1 MiB of Arrow data per Parquet row group: bounds write memory
PART_BYTES = 16 << 20  # Arrow bytes per part file at most (and rows_per_part rows)
WRITERS = max(1, min(4, os.cpu_count() or 1))  # part files written at once (Arrow drops the GIL)
TEXT_BLOCK = 2048  # documents per Arrow chunk of a text table built from Python strings
TEXT_BLOCK_BYTES = 1 << 26  # ... or fewer: a chunk's int32 offsets must stay below 2**31
QUANTIZE_ROWS = 8192  # float images quantized per block, so no full-size float temporary
ID_BYTES = 12  # a row id is the first 12 bytes of its sha256, as 24 hex digits
# columns with Parquet statistics: not the pixels, text or PCM
STATISTICS = ["id", "split", "label", "height", "width", "channels", "sample_rate"]
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def image_schema(size: int) -> pa.Schema:
    """The schema of an image table whose images hold `size` = C*H*W values each."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("label", pa.int16()),
            pa.field("height", pa.int16(), nullable=False),
            pa.field("width", pa.int16(), nullable=False),
            pa.field("channels", pa.int16(), nullable=False),
            pa.field("pixels", pa.binary(size), nullable=False),
        ]
    )


def audio_schema(clip_samples: int) -> pa.Schema:
    """The schema of an audio table whose clips hold `clip_samples` int16 samples each."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("label", pa.int16()),
            pa.field("label_name", pa.string()),
            pa.field("sample_rate", pa.int32(), nullable=False),
            pa.field("source_file", pa.string()),
            pa.field("pcm", pa.binary(2 * clip_samples), nullable=False),
        ]
    )


TEXT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)


class SnapshotError(RuntimeError):
    """A snapshot is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    path: Path
    manifest: dict
    created: bool  # False when the same content was already there

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def ref(self) -> SnapshotRef:
        """The reference the pipeline's stages hand on (`created`: published by this call)."""
        m = self.manifest
        return SnapshotRef(
            self.id, self.name, m["kind"], str(self.path), m["num_rows"], self.created
        )


def split_of(row_id: str, validation_fraction: float) -> str:
    """Deterministic split from a content hash: the same item always lands in the same split."""
    return "validation" if int(row_id[:8], 16) / 0xFFFFFFFF < validation_fraction else "train"


def _ids_and_splits(digests: np.ndarray, validation_fraction: float) -> tuple[pa.Array, pa.Array]:
    """Row ids (the first 24 hex digits of each sha256, (N, 32) uint8) and their splits:
    `split_of`, both vectorized."""
    n = len(digests)
    head = digests[:, :ID_BYTES]
    hexed = np.empty((n, 2 * ID_BYTES), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[head >> 4]
    hexed[:, 1::2] = _HEX[head & 15]
    offsets = np.arange(0, (n + 1) * 2 * ID_BYTES, 2 * ID_BYTES, dtype=np.int32)
    ids = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(hexed)])
    first = np.ascontiguousarray(digests[:, :4]).view(">u4").reshape(n)
    validation = pa.array(first / 0xFFFFFFFF < validation_fraction, pa.bool_(), memory_pool=POOL)
    return ids, pc.if_else(validation, "validation", "train", memory_pool=POOL)


def pixels_uint8(pixels: np.ndarray) -> np.ndarray:
    """(N, C, H, W) pixels as uint8 0..255: uint8 as it is (no copy), float in [0, 1] quantized
    with rint(x * 255). Float pixels that are NaN, infinite or outside [0, 1] are refused with
    their counts: clipping them would silently hide a broken source."""
    if pixels.dtype == np.uint8:
        return pixels
    if not np.issubdtype(pixels.dtype, np.floating):
        raise DataSourceError(
            f"image pixels are {pixels.dtype}; a source gives uint8 (0..255) or float in [0, 1]"
        )
    n = len(pixels)
    flat = pixels.reshape(n, int(np.prod(pixels.shape[1:])))
    out = np.empty(flat.shape, dtype=np.uint8)
    nonfinite = np.zeros(n, dtype=np.int64)
    outside = np.zeros(n, dtype=np.int64)
    for start in range(0, n, QUANTIZE_ROWS):
        rows = slice(start, start + QUANTIZE_ROWS)
        block = flat[rows]
        finite = np.isfinite(block)
        with np.errstate(invalid="ignore"):
            nonfinite[rows] = (~finite).sum(axis=1)
            outside[rows] = (finite & ((block < 0) | (block > 1))).sum(axis=1)
            out[rows] = np.clip(np.rint(np.where(finite, block, 0) * np.float32(255)), 0, 255)
    problems = []
    for what, per_image in (
        ("NaN or infinite pixels", nonfinite),
        ("pixels outside [0, 1]", outside),
    ):
        bad = np.flatnonzero(per_image)
        if bad.size:
            problems.append(
                f"{what}: {int(per_image.sum())} value(s) in {bad.size} image(s) "
                f"(first: image {int(bad[0])})"
            )
    if problems:
        raise DataSourceError(
            f"{'; '.join(problems)}. Float pixels must be finite and in [0, 1] to be stored as "
            f"uint8; fix the source or its preprocessing"
        )
    return out.reshape(pixels.shape)


def image_table(data: ImageData, validation_fraction: float = 0.2) -> pa.Table:
    """One row per image, pixels as uint8 (see the module docstring). Raises DataSourceError on
    float pixels that are not finite or not in [0, 1]."""
    n, c, h, w = data.pixels.shape
    size = c * h * w
    flat = np.ascontiguousarray(pixels_uint8(data.pixels)).reshape(n * size)
    digests = sha256_rows(flat, np.arange(0, (n + 1) * size, size, dtype=np.int64))
    ids, splits = _ids_and_splits(digests, validation_fraction)
    pixels = pa.Array.from_buffers(pa.binary(size), n, [None, pa.py_buffer(flat)])  # zero-copy
    return pa.table(
        {
            "id": ids,
            "split": splits,
            "label": pa.array(data.labels, pa.int16()),
            "height": pa.array(np.full(n, h), pa.int16()),
            "width": pa.array(np.full(n, w), pa.int16()),
            "channels": pa.array(np.full(n, c), pa.int16()),
            "pixels": pixels,
        },
        schema=image_schema(size),
    )


def _string_chunks(texts: list[str]) -> pa.ChunkedArray:
    """Python strings as a chunked string array, each text encoded once (no builder growth)."""
    chunks: list[pa.Array] = []
    encoded: list[bytes] = []
    size = 0

    def flush() -> None:
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))]
        chunks.append(pa.Array.from_buffers(pa.string(), len(encoded), buffers))

    for t in texts:
        encoded.append(t.encode("utf-8"))
        size += len(encoded[-1])
        if len(encoded) == TEXT_BLOCK or size >= TEXT_BLOCK_BYTES:
            flush()
            encoded, size = [], 0
    if encoded:
        flush()
    return pa.chunked_array(chunks, pa.string())


def text_table(
    texts: list[str] | pa.Array | pa.ChunkedArray,
    validation_fraction: float = 0.2,
    digests: np.ndarray | None = None,
) -> pa.Table:
    """One row per document; ids are content hashes, so equal texts share an id and a split.
    `texts`: Python strings, or a string array used as it is (no copy). `digests`: the texts'
    sha256 as (N, 32) uint8 when the caller has them (`aigc_core.data.text.load_text` does)."""
    if isinstance(texts, pa.Array):
        texts = pa.chunked_array([texts], pa.string())
    elif not isinstance(texts, pa.ChunkedArray):
        texts = _string_chunks(texts)
    if digests is None:
        digests = np.concatenate(
            [np.empty((0, 32), np.uint8)]
            + [sha256_rows(*string_buffers(c)) for c in texts.chunks if len(c)]
        )
    if len(digests) != len(texts):
        raise ValueError(f"{len(digests)} digests for {len(texts)} texts")
    ids, splits = _ids_and_splits(digests, validation_fraction)
    return pa.table({"id": ids, "split": splits, "text": texts}, schema=TEXT_SCHEMA)


def text_split(table: pa.Table, split: str | None = None) -> list[str]:
    """The documents of one split (train or validation), or of all rows, in snapshot order."""
    if split is not None:
        if split not in SPLITS:
            raise SnapshotError(f"unknown split {split!r}; choose one of {SPLITS}")
        table = table.filter(pc.equal(table.column("split"), split))
        if table.num_rows == 0:
            raise SnapshotError(f"split {split!r} is empty")
    return table.column("text").to_pylist()


def audio_table(data: AudioData, validation_fraction: float = 0.2) -> pa.Table:
    """One row per clip, PCM as little-endian int16 bytes (see the module docstring)."""
    if data.pcm.ndim != 2 or data.pcm.dtype != np.int16:
        raise ValueError(f"PCM must be (N, L) int16, not {data.pcm.shape} {data.pcm.dtype}")
    n, length = data.pcm.shape
    flat = np.ascontiguousarray(data.pcm, dtype="<i2").reshape(n * length).view(np.uint8)
    size = 2 * length
    digests = sha256_rows(flat, np.arange(0, (n + 1) * size, size, dtype=np.int64))
    ids, splits = _ids_and_splits(digests, validation_fraction)
    labels = np.asarray(data.labels, dtype=np.int64)
    names = np.asarray(data.label_names, dtype=object)
    if n and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels outside 0..{len(names) - 1}")
    files = data.files if data.files is not None else [None] * n
    if len(files) != n:
        raise ValueError(f"{len(files)} source files for {n} clips")
    return pa.table(
        {
            "id": ids,
            "split": splits,
            "label": pa.array(labels, pa.int16()),
            "label_name": pa.array(names[labels] if n else [], pa.string()),
            "sample_rate": pa.array(np.full(n, data.sample_rate), pa.int32()),
            "source_file": pa.array(files, pa.string()),
            "pcm": pa.Array.from_buffers(pa.binary(size), n, [None, pa.py_buffer(flat)]),
        },
        schema=audio_schema(length),
    )


def pcm_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(N, L) int16: the clips of an audio table's `pcm` column (a view of one chunk's buffer,
    read-only; a copy when the column has several chunks). The one reader of the PCM layout."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind, n = column.type, len(column)
    if not pa.types.is_fixed_size_binary(kind) or kind.byte_width % 2:
        raise SnapshotError(f"the pcm column holds {kind}, not int16 clips; ingest again")
    if column.null_count:
        raise SnapshotError(f"{column.null_count} clip(s) have no PCM; ingest again")
    length = kind.byte_width // 2
    if n == 0:
        return np.empty((0, length), dtype=np.int16)
    values = np.frombuffer(column.buffers()[1], "<i2", n * length, column.offset * 2 * length)
    return values.reshape(n, length)


def content_id(table: pa.Table, params: dict) -> str:
    """The snapshot id: a hash of the format, the parameters, the schema and the rows' ids
    (themselves content hashes), splits, labels and label names where a table has them (each
    column's values as text, joined by \x1f; a missing label is `None`)."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, "params": params}, sort_keys=True).encode())
    h.update(str(table.schema).encode())
    for col in [c for c in ("id", "split", "label", "label_name") if c in table.column_names]:
        h.update(col.encode())
        column = table.column(col)
        if len(column) == 0:
            continue
        text = pc.cast(column, pa.string(), memory_pool=POOL)
        values = pc.coalesce(text, "None", memory_pool=POOL).combine_chunks(memory_pool=POOL)
        whole = pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values, pool=POOL)
        h.update(pc.binary_join(whole, "\x1f", memory_pool=POOL)[0].as_buffer())
    return h.hexdigest()[:16]


def write_snapshot(
    datasets_root: Path,
    name: str,
    table: pa.Table,
    *,
    kind: str,
    source: str,
    params: dict,
    extra: dict | None = None,
    rows_per_part: int = 50_000,
    sid: str | None = None,
) -> Snapshot:
    """Publish `table` as a snapshot, or return the existing one with the same content. `sid`:
    `content_id(table, params)` when the caller has computed it already. Part files hold at most
    `rows_per_part` rows and about PART_BYTES of Arrow data, and are written WRITERS at a time."""
    if table.num_rows == 0:
        raise SnapshotError(f"dataset {name!r} has no rows; nothing to snapshot")
    sid = sid or content_id(table, params)
    final = datasets_root / name / sid
    if final.exists():
        log.warning("snapshot %s/%s already holds this content: reused, nothing written", name, sid)
        return Snapshot(sid, name, final, read_manifest(final), created=False)

    # small row groups bound the writer's buffers
    row_group_rows = max(1, ROW_GROUP_BYTES * table.num_rows // max(1, table.nbytes))
    counts = {s: 0 for s in SPLITS}
    for pair in pc.value_counts(table.column("split"), memory_pool=POOL).to_pylist():
        counts[pair["values"]] = int(pair["counts"])
    n_parts = max(-(-table.num_rows // rows_per_part), -(-table.nbytes // PART_BYTES))
    per_part = -(-table.num_rows // n_parts)  # balanced parts
    n_parts = -(-table.num_rows // per_part)
    # what reading and cleaning freed goes back to the OS before the writer allocates: Parquet's
    # own buffers come from Arrow's default pool (mimalloc), which cannot reuse it
    release_memory()

    def write_part(staging: Path, i: int) -> dict:
        part = f"part-{i:05d}.parquet"
        rows = table.slice(i * per_part, per_part)
        pq.write_table(
            rows,
            staging / part,
            compression="zstd",
            row_group_size=row_group_rows,
            # ids are unique, pixels and PCM are already bytes
            use_dictionary=[c for c in ("split", "label_name") if c in table.column_names],
            write_statistics=[c for c in STATISTICS if c in table.column_names],
            memory_pool=POOL,
        )
        return {
            "path": part,
            "rows": rows.num_rows,
            "sha256": sha256_file(staging / part),
            "bytes": (staging / part).stat().st_size,
        }

    try:
        with staged_dir(final, size_hint=table.nbytes) as staging:
            if n_parts == 1:
                files = [write_part(staging, 0)]
            else:  # Parquet encoding and compression release the GIL
                with ThreadPoolExecutor(min(WRITERS, n_parts)) as pool:
                    files = list(pool.map(lambda i: write_part(staging, i), range(n_parts)))
            manifest = {
                "format_version": FORMAT_VERSION,
                "id": sid,
                "name": name,
                "kind": kind,
                "source": source,
                "params": params,
                "schema": table.schema.to_string(show_schema_metadata=False),
                "num_rows": table.num_rows,
                "splits": counts,
                "files": files,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **(extra or {}),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except FileExistsError:  # a concurrent ingest of the same content won the rename
        return Snapshot(sid, name, final, read_manifest(final), created=False)
    log.info("snapshot %s/%s published: %d rows", name, sid, table.num_rows)
    return Snapshot(sid, name, final, manifest, created=True)


def read_manifest(path: Path) -> dict:
    try:
        return json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise SnapshotError(f"{path} has no {MANIFEST}: not a published snapshot") from None


def list_snapshots(datasets_root: Path) -> list[Snapshot]:
    """Every published snapshot under the root (staging folders and strays are skipped)."""
    found = []
    for path in sorted(Path(datasets_root).glob("*/*")):
        if path.name.startswith(".") or not (path / MANIFEST).is_file():
            continue
        try:
            manifest = read_manifest(path)
        except (SnapshotError, json.JSONDecodeError):
            log.warning("skipping %s: unreadable manifest", path)
            continue
        found.append(Snapshot(path.name, path.parent.name, path, manifest, created=False))
    return sorted(found, key=lambda s: s.manifest.get("created_at", ""))


def find_snapshot(datasets_root: Path, snapshot_id: str) -> Snapshot:
    """The snapshot with this id, under whichever dataset's folder holds it. The id must be a
    snapshot id (`aigc_core.names`): it is looked up as a folder name, never as a pattern."""
    root = Path(datasets_root)
    try:
        sid = names.snapshot_id(snapshot_id)
    except names.InvalidName as e:
        raise SnapshotError(f"no snapshot with id {snapshot_id!r} under {root}: {e}") from None
    dirs = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    matches = [d / sid for d in dirs if not d.name.startswith(".") and (d / sid).is_dir()]
    if not matches:
        raise SnapshotError(f"no snapshot with id {snapshot_id!r} under {root}")
    path = names.inside(root, matches[0])
    return Snapshot(sid, path.parent.name, path, read_manifest(path), created=False)


def open_snapshot(ref: SnapshotRef) -> Snapshot:
    """The snapshot a stage's reference names, at the folder it names."""
    path = Path(ref.path)
    manifest = read_manifest(path)
    if manifest.get("id") != ref.id:
        raise SnapshotError(f"{path} holds snapshot {manifest.get('id')!r}, not {ref.id!r}")
    return Snapshot(ref.id, ref.name, path, manifest, created=False)


# Snapshots verified in this process: (folder, manifest digest) -> each part's (name, size,
# mtime, ctime, inode) when its sha256 matched. A snapshot is immutable once published, so later
# reads skip the hashing; a part changed since (any of those differs) is hashed again.
_VERIFIED: dict[tuple[str, str], tuple] = {}
_VERIFIED_LOCK = threading.Lock()


def _part_stats(snapshot: Snapshot) -> tuple:
    out = []
    for f in snapshot.manifest["files"]:
        st = (snapshot.path / f["path"]).stat()
        out.append((f["path"], st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(out)


def verify_once(snapshot: Snapshot) -> None:
    """Check every part against the manifest's sha256, once per process (see `_VERIFIED`);
    SnapshotError when one does not match."""
    digest = hashlib.sha256(json.dumps(snapshot.manifest, sort_keys=True).encode()).hexdigest()
    key = (str(snapshot.path.resolve()), digest)
    stats = _part_stats(snapshot)
    with _VERIFIED_LOCK:
        if _VERIFIED.get(key) == stats:
            return
    for f in snapshot.manifest["files"]:
        p = snapshot.path / f["path"]
        if sha256_file(p) != f["sha256"]:
            raise SnapshotError(
                f"{p} does not match the sha256 in its manifest: the snapshot "
                f"is corrupted; ingest the dataset again"
            )
    if _part_stats(snapshot) == stats:  # unchanged while it was hashed
        with _VERIFIED_LOCK:
            _VERIFIED[key] = stats


def read_table(snapshot: Snapshot, verify: bool = True) -> pa.Table:
    """Read all parts; when `verify`, check them against the manifest's sha256 first (once per
    process: a snapshot read again, its parts untouched, is not hashed again)."""
    if verify:
        verify_once(snapshot)
    return pa.concat_tables(
        [pq.read_table(snapshot.path / f["path"]) for f in snapshot.manifest["files"]]
    )


def pixel_values(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths): the stored pixel values of every row, concatenated in row order, and
    each row's number of values; a null row has none. The one reader of the pixel column, so the
    only code that knows its layouts: format 3 fixed_size_binary (uint8 values, no copy for one
    chunk), format 2 list<uint8>, format 1 list<float32> in [0, 1]."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind, n = column.type, len(column)
    if pa.types.is_fixed_size_binary(kind):
        width = kind.byte_width
        if n == 0:
            return np.empty(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
        values = np.frombuffer(column.buffers()[1], np.uint8, n * width, column.offset * width)
        lengths = np.full(n, width, dtype=np.int64)
        if column.null_count:
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            values, lengths[~valid] = values.reshape(n, width)[valid].reshape(-1), 0
        return values, lengths
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        return column.flatten().to_numpy(zero_copy_only=False), lengths.astype(np.int64)
    raise SnapshotError(
        f"the pixel column holds {kind}, not a snapshot pixel layout (fixed_size_binary, "
        f"list<uint8> or list<float>); ingest the images again"
    )


def image_arrays(table: pa.Table, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (N, C, H, W) float32 in [0, 1], labels (N,) int64) for one split or all rows."""
    if split is not None:
        table = table.filter(pc.equal(table.column("split"), split))
    n = table.num_rows
    if n == 0:
        raise SnapshotError(f"split {split!r} is empty")
    dims = ("channels", "height", "width")
    distinct = table.select(list(dims)).group_by(list(dims)).aggregate([]).to_pylist()
    shape = {(r["channels"], r["height"], r["width"]) for r in distinct}
    if len(shape) != 1:
        raise SnapshotError(f"images have mixed shapes {sorted(shape)}; resize them at ingest")
    c, h, w = shape.pop()
    flat, _ = pixel_values(table.column("pixels"))
    pixels = flat.reshape(n, c, h, w).astype(np.float32)
    if flat.dtype == np.uint8:  # formats 2 and 3; format 1 stored float32 in [0, 1]
        pixels /= np.float32(255.0)
    labels = table.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
    return pixels, labels
