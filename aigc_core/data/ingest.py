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
from aigc_core.data.audio import (
    AUDIO_SUFFIXES,
    DEFAULT_CLIP_SAMPLES,
    DEFAULT_MAX_SECONDS,
    DEFAULT_SAMPLE_RATE,
    load_audio_folder,
)
from aigc_core.data.files import DataSourceError, require_exists
from aigc_core.data.folders import IMAGE_SUFFIXES
from aigc_core.data.notes import load_notes
from aigc_core.data.snapshot import (
    Snapshot,
    audio_table,
    content_id,
    image_table,
    read_manifest,
    text_table,
    write_snapshot,
)
from aigc_core.data.text import DEFAULT_MAX_DOC_CHARS, MIN_DOC_CHARS, TEXT_SUFFIXES, load_text
from aigc_core.kinds import KINDS

log = logging.getLogger(__name__)

TEXT_DATASETS = ("python-docs",)
AUDIO_DATASETS = {"notes": load_notes}

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
    return {
        **{n: "image" for n in sources.IMAGE_SOURCES},
        **{n: "text" for n in TEXT_DATASETS},
        **{n: "audio" for n in AUDIO_DATASETS},
    }


def detect_kind(dataset: str, path: Path | None, kind: str | None = None) -> str:
    """image, text or audio: from --kind, else the built-in name, else what the path holds
    (images first, then WAV/FLAC, then text: a folder of recordings may hold a README)."""
    if kind is not None:
        if kind not in KINDS:
            raise DataSourceError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        return kind
    if dataset in sources.IMAGE_SOURCES:
        return "image"
    if dataset in TEXT_DATASETS:
        return "text"
    if dataset in AUDIO_DATASETS:
        return "audio"
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
    if suffixes & set(AUDIO_SUFFIXES):
        return "audio"
    if suffixes & set(TEXT_SUFFIXES):
        return "text"
    raise DataSourceError(
        f"{path}: neither images (PNG, JPEG, IDX), audio (WAV, FLAC) nor text "
        f"({', '.join(TEXT_SUFFIXES)}) found; check --path or say --kind"
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
    sample_rate: int | None = None,
    clip_samples: int | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> Prepared:
    """Read, preprocess and tabulate a dataset. Raises DataSourceError on bad input.

    Audio: `sample_rate` and `clip_samples` default to the built-in set's own (notes: 8 kHz,
    4096) or, for a folder, 16 kHz and 16384; `max_seconds` bounds each file's length."""
    if not 0.0 < validation_fraction < 1.0:
        raise DataSourceError(
            f"validation fraction {validation_fraction} must be between 0 and 1 (exclusive)"
        )
    path = Path(path) if path is not None else None
    if path is not None and dataset in ("digits", *TEXT_DATASETS, *AUDIO_DATASETS):
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
    if k == "audio":
        return _prepare_audio(
            dataset, path, validation_fraction, sample_rate, clip_samples, max_seconds
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


def _prepare_audio(
    dataset: str,
    path: Path | None,
    validation_fraction: float,
    sample_rate: int | None,
    clip_samples: int | None,
    max_seconds: float,
) -> Prepared:
    rate_len = {
        k: v
        for k, v in (("sample_rate", sample_rate), ("clip_samples", clip_samples))
        if v is not None
    }
    if path is None:
        if dataset not in AUDIO_DATASETS:
            raise DataSourceError(
                f"unknown audio dataset {dataset!r}; built-in: {', '.join(AUDIO_DATASETS)}, "
                f"or give --path to a folder of WAV/FLAC files"
            )
        data = AUDIO_DATASETS[dataset](**rate_len)
    else:
        data = load_audio_folder(
            path,
            sample_rate=sample_rate or DEFAULT_SAMPLE_RATE,
            clip_samples=clip_samples or DEFAULT_CLIP_SAMPLES,
            max_seconds=max_seconds,
        )
    return Prepared(
        name=dataset,
        kind="audio",
        table=audio_table(data, validation_fraction),
        source=data.source,
        params={**data.params, "validation_fraction": validation_fraction},
        extra={
            "sample_rate": data.sample_rate,
            "clip_samples": int(data.pcm.shape[1]),
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
