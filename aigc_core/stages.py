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
    config_digest: str = ""  # of the resolved model and train configs (aigc_core.settings)


@dataclass(frozen=True)
class Scores:
    """The evaluate stage's result: the candidate's metrics (logged on its run)."""

    run_id: str
    metrics: Mapping[str, float]


# --- the tag scheme -----------------------------------------------------------------------------
# Every MLflow run and model version tag that says what made it is `aigc.<key>`: aigc.stage
# (pipeline, data-contract, train, content-batch), aigc.family, aigc.dataset, aigc.preset,
# aigc.snapshot_id, aigc.run_id, aigc.flow_run_id, aigc.git_revision, aigc.code_digest,
# aigc.config_digest, aigc.parent_version, aigc.parent_model_uri, aigc.batch_id, and for image
# versions aigc.num_classes (0: unconditional; `aigc generate --labels` is checked against it
# before a flow starts); a compressed version adds aigc.compressed_from (the parent version),
# aigc.compressed_from_run and aigc.compression_method. The registry's decisions have their own
# prefixes: gate.<metric> (what the gate read), promotion.<key>, rollback.<key> and
# compression.<key> (see `aigc_core.promotion`).
TAG_PREFIX = "aigc."


def tags(**values: object) -> dict[str, str]:
    """`aigc.<key>` tags of the values given (None left out)."""
    return {f"{TAG_PREFIX}{k}": str(v) for k, v in values.items() if v is not None}


def tag(tags: Mapping[str, str], key: str, default: str = "") -> str:
    """The `aigc.<key>` tag, or the bare `<key>` of a version registered before the scheme."""
    return tags.get(f"{TAG_PREFIX}{key}") or tags.get(key) or default


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version as the registry reports it."""

    name: str
    version: str
    run_id: str
    tags: Mapping[str, str] = field(default_factory=dict)

    def tag(self, key: str, default: str = "") -> str:
        """Its `aigc.<key>` tag (or the legacy bare key)."""
        return tag(self.tags, key, default)


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    model_uri: str
    run_id: str
    description: str = ""  # the version's description in the registry (data, config, metrics)


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    decision: str  # promoted, rejected, unchanged, conflict
    reason: str
    champion_version: str | None
    previous_champion: str | None
