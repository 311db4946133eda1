"""What one stage hands the next: small frozen records that say what was made, by id.

Each stage reads only what the previous stage wrote and names it: the snapshot (id and folder,
verified when it was read), the training run, its scores, the registered version, the promotion
decision. Content batches have their own records (`aigc_core.content`). Records travel between
Prefect tasks and, for content shards, to Dask workers: plain values only, picklable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SnapshotRef:
    id: str
    name: str  # the dataset's name
    kind: str  # image or text
    path: str  # the snapshot's folder
    rows: int
    created: bool  # False: the same content was ingested before (the existing snapshot)


@dataclass(frozen=True)
class TrainedRun:
    run_id: str
    snapshot: SnapshotRef
    family: str
    model_name: str  # the registered model it becomes a version of, e.g. aigc-dcgan-digits
    model_dir: str  # weights + config of the served module
    checkpoint_dir: str
    preset: str
    device: str
    steps: int
    resumed_from_step: int
    samples_per_s: float | None = None
    final: Mapping[str, float | None] = field(default_factory=dict)  # the family's final metrics
    parent_model_uri: str | None = None  # a warm start's source
    parent_version: str | None = None


@dataclass(frozen=True)
class Scores:
    """The evaluate stage's result: the candidate's metrics (logged on its run)."""

    run_id: str
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version as the registry reports it."""

    name: str
    version: str
    run_id: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    model_uri: str
    run_id: str


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    decision: str  # promoted, rejected, unchanged, conflict
    reason: str
    champion_version: str | None
    previous_champion: str | None
