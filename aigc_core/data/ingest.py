"""Ingest: a source (built-in name or user path) -> a checked table -> a published snapshot.

`prepare` reads and preprocesses; `publish` runs the caller's gate on the in-memory table first
and writes the snapshot only if the gate passes, so data that breaks its contract never appears
under the datasets folder. The gate is passed in (a data contract from `data_contracts`), which
keeps this library free of orchestration and validation imports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa

from aigc_core.data import sources
from aigc_core.data.files import DataSourceError, require_exists
from aigc_core.data.folders import IMAGE_SUFFIXES
from aigc_core.data.snapshot import (
    Snapshot,
    content_id,
    image_table,
    read_manifest,
    text_table,
    write_snapshot,
)
from aigc_core.data.text import DEFAULT_MAX_DOC_CHARS, MIN_DOC_CHARS, TEXT_SUFFIXES, load_text

log = logging.getLogger(__name__)

TEXT_DATASETS = ("python-docs",)
KINDS = ("image", "text")

Gate = Callable[[pa.Table, dict], object]


@dataclass(frozen=True)
class Prepared:
    """A dataset read and preprocessed, not yet written."""

    name: str
    kind: str
    table: pa.Table
    source: str
    params: dict
    extra: dict

    @cached_property
    def id(self) -> str:  # hashes every row's id: computed once
        return content_id(self.table, self.params)

    def manifest_preview(self) -> dict:
        """The manifest fields a data contract reads, before anything is written."""
        return {"id": self.id, "name": self.name, "kind": self.kind, **self.extra}


def builtin_datasets() -> dict[str, str]:
    return {**{n: "image" for n in sources.IMAGE_SOURCES}, **{n: "text" for n in TEXT_DATASETS}}


def detect_kind(dataset: str, path: Path | None, kind: str | None = None) -> str:
    """image or text: from --kind, else the built-in name, else what the path holds."""
    if kind is not None:
        if kind not in KINDS:
            raise DataSourceError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        return kind
    if dataset in sources.IMAGE_SOURCES:
        return "image"
    if dataset in TEXT_DATASETS:
        return "text"
    if path is None:
        raise DataSourceError(
            f"unknown dataset {dataset!r}; built-in datasets: "
            f"{', '.join(sorted(builtin_datasets()))}, or give --path to your own files"
        )
    path = require_exists(Path(path))
    names = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    suffixes = {p.suffix.lower() for p in names}
    if any("idx3" in p.name for p in names) or suffixes & set(IMAGE_SUFFIXES):
        return "image"
    if suffixes & set(TEXT_SUFFIXES):
        return "text"
    raise DataSourceError(
        f"{path}: neither images (PNG, JPEG, IDX) nor text ({', '.join(TEXT_SUFFIXES)}) found; "
        f"check --path or say --kind"
    )


def prepare(
    dataset: str,
    *,
    path: str | Path | None = None,
    kind: str | None = None,
    validation_fraction: float = 0.2,
    image_size: int | None = None,
    mode: str = "L",
    text_column: str = "text",
    bad_bytes: str = "reject",
    downloads: Path | None = None,
) -> Prepared:
    """Read, preprocess and tabulate a dataset. Raises DataSourceError on bad input."""
    if not 0.0 < validation_fraction < 1.0:
        raise DataSourceError(
            f"validation fraction {validation_fraction} must be between 0 and 1 (exclusive)"
        )
    path = Path(path) if path is not None else None
    if path is not None and dataset in ("digits", *TEXT_DATASETS):
        raise DataSourceError(
            f"{dataset!r} is built in and reads no files; name your dataset differently "
            f"to ingest {path}"
        )
    k = detect_kind(dataset, path, kind)
    if k == "text":
        data = load_text(dataset, path, text_column=text_column, bad_bytes=bad_bytes)
        return Prepared(
            name=dataset,
            kind="text",
            table=text_table(data.docs, validation_fraction, digests=data.digests),
            source=data.source,
            params={**data.params, "validation_fraction": validation_fraction},
            extra={
                "text_bounds": {"min_chars": MIN_DOC_CHARS, "max_chars": DEFAULT_MAX_DOC_CHARS},
                "cleaning": data.stats,
            },
        )
    kw: dict = {}
    if image_size is not None:
        kw["image_size"] = image_size
    if path is not None:
        kw["path"] = path
        if dataset not in sources.IMAGE_SOURCES:
            kw["mode"] = mode
    elif dataset in ("mnist", "fashion-mnist") and downloads is not None:
        kw["cache_dir"] = downloads / dataset
    data = sources.load_image_source(dataset, **kw)
    _, c, h, w = data.pixels.shape
    return Prepared(
        name=dataset,
        kind="image",
        table=image_table(data, validation_fraction),
        source=data.source,
        params={**data.params, "validation_fraction": validation_fraction},
        extra={
            "image_shape": [c, h, w],
            "label_set": list(range(len(data.label_names))),
            "label_names": data.label_names,
        },
    )


def publish(prepared: Prepared, datasets_root: Path, gate: Gate | None = None) -> Snapshot:
    """The existing snapshot with the same content, or a new one once `gate` has passed."""
    sid = prepared.id
    final = Path(datasets_root) / prepared.name / sid
    if final.is_dir():
        log.warning("snapshot %s/%s already holds this content: reused", prepared.name, sid)
        return Snapshot(sid, prepared.name, final, read_manifest(final), created=False)
    if gate is not None:
        gate(prepared.table, prepared.manifest_preview())  # raises: nothing is written
    return write_snapshot(
        Path(datasets_root),
        prepared.name,
        prepared.table,
        kind=prepared.kind,
        source=prepared.source,
        params=prepared.params,
        extra=prepared.extra,
        sid=sid,
    )
