"""Content-addressed Parquet snapshots (DESIGN.md section 3).

A snapshot is `datasets/<name>/<id>/` holding Parquet part files and `manifest.json`. Its id is a
sha256 over the preprocessing parameters and every row's content, so ingesting the same data twice
gives the same id and writes nothing. It is built in a staging directory and renamed into place.

Image rows: `id` (sha256 of the pixel bytes), `split` (train or validation, from the id, so equal
images always share a split), `label`, `height`, `width`, `channels`, `pixels` (float32 in [0, 1],
row-major C*H*W).

Text rows: `id` (sha256 of the UTF-8 text), `split` (from the id, as for images), `text` (one
cleaned document per row). `text_split(table, split)` gives a trainer the documents of a split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aigc_core.atomic import sha256_file, staged_dir
from aigc_core.data.sources import ImageData

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int16()),
        pa.field("height", pa.int16(), nullable=False),
        pa.field("width", pa.int16(), nullable=False),
        pa.field("channels", pa.int16(), nullable=False),
        pa.field("pixels", pa.list_(pa.float32()), nullable=False),
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


def split_of(row_id: str, validation_fraction: float) -> str:
    """Deterministic split from a content hash: the same item always lands in the same split."""
    return "validation" if int(row_id[:8], 16) / 0xFFFFFFFF < validation_fraction else "train"


def image_table(data: ImageData, validation_fraction: float = 0.2) -> pa.Table:
    n, c, h, w = data.pixels.shape
    flat = np.ascontiguousarray(data.pixels, dtype=np.float32).reshape(n, c * h * w)
    ids = [hashlib.sha256(row.tobytes()).hexdigest()[:24] for row in flat]
    splits = [split_of(i, validation_fraction) for i in ids]
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), pa.float32()), c * h * w)
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "split": pa.array(splits, pa.string()),
            "label": pa.array(data.labels, pa.int16()),
            "height": pa.array(np.full(n, h), pa.int16()),
            "width": pa.array(np.full(n, w), pa.int16()),
            "channels": pa.array(np.full(n, c), pa.int16()),
            "pixels": pixels.cast(pa.list_(pa.float32())),
        },
        schema=IMAGE_SCHEMA,
    )


def text_table(texts: list[str], validation_fraction: float = 0.2) -> pa.Table:
    """One row per document; ids are content hashes, so equal texts share an id and a split."""
    ids = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:24] for t in texts]
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "split": pa.array([split_of(i, validation_fraction) for i in ids], pa.string()),
            "text": pa.array(texts, pa.string()),
        },
        schema=TEXT_SCHEMA,
    )


def text_split(table: pa.Table, split: str | None = None) -> list[str]:
    """The documents of one split (train or validation), or of all rows, in snapshot order."""
    if split is not None:
        if split not in SPLITS:
            raise SnapshotError(f"unknown split {split!r}; choose one of {SPLITS}")
        table = table.filter(pc.equal(table.column("split"), split))
        if table.num_rows == 0:
            raise SnapshotError(f"split {split!r} is empty")
    return table.column("text").to_pylist()


def content_id(table: pa.Table, params: dict) -> str:
    """The snapshot id: a hash of the format, the parameters, the schema and the rows' ids
    (themselves content hashes), splits and labels."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, "params": params}, sort_keys=True).encode())
    h.update(str(table.schema).encode())
    for col in [c for c in ("id", "split", "label") if c in table.column_names]:
        h.update(col.encode())
        h.update("\x1f".join(map(str, table.column(col).to_pylist())).encode())
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
) -> Snapshot:
    """Publish `table` as a snapshot, or return the existing one with the same content."""
    if table.num_rows == 0:
        raise SnapshotError(f"dataset {name!r} has no rows; nothing to snapshot")
    sid = content_id(table, params)
    final = datasets_root / name / sid
    if final.exists():
        log.info("snapshot %s/%s already exists; nothing written", name, sid)
        return Snapshot(sid, name, final, read_manifest(final), created=False)

    counts = {s: 0 for s in SPLITS}
    for s, c in zip(
        *np.unique(table.column("split").to_numpy(zero_copy_only=False), return_counts=True),
        strict=True,
    ):
        counts[str(s)] = int(c)
    try:
        with staged_dir(final) as staging:
            files = []
            for i, start in enumerate(range(0, table.num_rows, rows_per_part)):
                part = f"part-{i:05d}.parquet"
                pq.write_table(
                    table.slice(start, rows_per_part), staging / part, compression="zstd"
                )
                files.append(
                    {
                        "path": part,
                        "rows": min(rows_per_part, table.num_rows - start),
                        "sha256": sha256_file(staging / part),
                        "bytes": (staging / part).stat().st_size,
                    }
                )
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
    matches = [p for p in Path(datasets_root).glob(f"*/{snapshot_id}") if p.is_dir()]
    if not matches:
        raise SnapshotError(f"no snapshot with id {snapshot_id!r} under {datasets_root}")
    path = matches[0]
    return Snapshot(snapshot_id, path.parent.name, path, read_manifest(path), created=False)


def read_table(snapshot: Snapshot, verify: bool = True) -> pa.Table:
    """Read all parts, checking each against the manifest's sha256 when `verify`."""
    parts = []
    for f in snapshot.manifest["files"]:
        p = snapshot.path / f["path"]
        if verify and sha256_file(p) != f["sha256"]:
            raise SnapshotError(
                f"{p} does not match the sha256 in its manifest: the snapshot "
                f"is corrupted; ingest the dataset again"
            )
        parts.append(pq.read_table(p))
    return pa.concat_tables(parts)


def image_arrays(table: pa.Table, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (N, C, H, W) float32, labels (N,) int64) for one split or all rows."""
    if split is not None:
        table = table.filter(pc.equal(table.column("split"), split))
    n = table.num_rows
    if n == 0:
        raise SnapshotError(f"split {split!r} is empty")
    shape = {
        (c, h, w)
        for c, h, w in zip(
            table.column("channels").to_pylist(),
            table.column("height").to_pylist(),
            table.column("width").to_pylist(),
            strict=True,
        )
    }
    if len(shape) != 1:
        raise SnapshotError(f"images have mixed shapes {sorted(shape)}; resize them at ingest")
    c, h, w = shape.pop()
    flat = table.column("pixels").combine_chunks().flatten().to_numpy()
    pixels = flat.reshape(n, c, h, w).astype(np.float32, copy=False)
    labels = table.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
    return pixels, labels
