"""The published batch: `manifest.json`'s fields as a frozen record, `Batch`.

The manifest says what the batch is (model version, run, snapshot, seed, shards, policy, for
text the sampling options and the number of prompts, for images the generation options given,
for audio the clips' sample rate and the items generated and kept per predicted class),
what it holds (counts, reasons, items asked and kept per class when classes were asked, one
entry per Parquet file with its sha256) and where it was made (the MLflow batch run, the
Prefect flow run). A `Batch` adds what is not in the file: where the batch lies and how many
shards this run found already written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigc_core.content.schema import CONTACT_SHEET, MANIFEST, REPORT

# The manifest's keys, in the order the file lists them; TEXT_ONLY ones only in text batches.
MANIFEST_KEYS = (
    "format_version",
    "batch_id",
    "model_name",
    "model_version",
    "run_id",
    "snapshot_id",
    "kind",
    "family",
    "model_ref",
    "created_at",
    "seed",
    "shards",
    "policy",
    "sampling",
    "prompt_file",
    "n_prompts",
    "options",
    "sample_rate",
    "n_generated",
    "n_kept",
    "n_rejected",
    "rejected_by_reason",
    "labels",
    "predicted_labels",
    "batch_run_id",
    "flow_run_id",
    "files",
    "contact_sheet",
    "report",
)
TEXT_ONLY = ("sampling", "prompt_file", "n_prompts")
WHEN_GIVEN = ("options", "labels")  # only in batches whose request gave them
AUDIO_ONLY = ("sample_rate", "predicted_labels")


@dataclass(frozen=True, kw_only=True)
class Batch:
    format_version: int
    batch_id: str
    model_name: str
    model_version: str
    run_id: str
    snapshot_id: str
    kind: str
    family: str
    model_ref: str
    created_at: str
    seed: int
    shards: Sequence[Mapping[str, int]]  # index, start, count, seed of each shard
    policy: Mapping[str, Mapping[str, Any]]
    n_generated: int
    n_kept: int
    n_rejected: int
    rejected_by_reason: Mapping[str, int]
    batch_run_id: str
    flow_run_id: str
    files: Sequence[Mapping[str, Any]]  # path, rows, kept, sha256 of each Parquet part
    contact_sheet: str | None
    report: str
    batch_dir: str  # not in the manifest: where the batch lies
    shards_skipped: int = 0  # not in the manifest: shards this run found written
    sampling: Mapping[str, Any] | None = None  # text only
    prompt_file: str | None = None  # text only
    n_prompts: int | None = None  # text only
    options: Mapping[str, Any] | None = None  # images: the generation options given
    # images and audio: items asked and kept per class,
    # {"requested": {"7": 1000}, "kept": {"7": 912}}
    labels: Mapping[str, Mapping[str, int]] | None = None
    sample_rate: int | None = None  # audio only: Hz of every clip (WAV file) of the batch
    # audio only: items per class the evaluator predicts, {"generated": {..}, "kept": {..}}
    predicted_labels: Mapping[str, Mapping[str, int]] | None = None

    def manifest(self) -> dict[str, Any]:
        """`manifest.json`'s content."""
        keys = [k for k in MANIFEST_KEYS if self.kind == "text" or k not in TEXT_ONLY]
        keys = [k for k in keys if self.kind == "audio" or k not in AUDIO_ONLY]
        keys = [k for k in keys if k not in WHEN_GIVEN or getattr(self, k)]
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        """The manifest with the batch's folder and the shards skipped: what batch-generate
        returns."""
        return {
            **self.manifest(),
            "batch_dir": self.batch_dir,
            "shards_skipped": self.shards_skipped,
        }

    def artifacts(self) -> list[Path]:
        """The batch's files worth keeping beside its run: manifest, report, contact sheet."""
        folder = Path(self.batch_dir)
        return [folder / f for f in (MANIFEST, REPORT, CONTACT_SHEET) if (folder / f).exists()]

    @classmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], batch_dir: str | Path, shards_skipped: int = 0
    ) -> Batch:
        known = {k: manifest[k] for k in MANIFEST_KEYS if k in manifest}
        return cls(**known, batch_dir=str(batch_dir), shards_skipped=shards_skipped)

    @classmethod
    def read(cls, batch_dir: str | Path, shards_skipped: int = 0) -> Batch:
        """The batch published at `batch_dir`."""
        manifest = json.loads((Path(batch_dir) / MANIFEST).read_text())
        return cls.from_manifest(manifest, batch_dir, shards_skipped)
