"""Tasks of the compress stage: a registered version's compressed twin, and the alias it may get.

`compress` makes a compressed copy of a registered version with its family's method
(`aigc_core.compression`), scores the parent and the copy on the same held-out data (the
parent's snapshot, the same evaluators, the family's fixed seeds), so that the two sets of
numbers compare, and registers the copy as a new version of the same model: its lineage is the
parent's (family, snapshot, classes) plus `aigc.compressed_from` (the parent's version) and
`aigc.compression_method`. One MLflow run records the stage: the copy's metrics beside the
parent's (`parent_<metric>`), and the sizes on disk. A version compressed before with the same
method and code is reused (nothing compressed twice) unless forced.

`gate_compressed` then asks the family's tolerance (`compression.within_tolerance`) and moves
`champion-compressed` or refuses, with the numbers (`aigc_core.promotion.gate_compressed`: under
the promotion lock, recorded in the version's tags and the audit log).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
from prefect import task
from prefect.runtime import flow_run

from aigc_core import compression, content, families, names, progress, promotion, provenance, stages
from aigc_core.data.snapshot import find_snapshot, read_table
from aigc_core.families.base import EvalInputs, Family
from aigc_core.paths import Home
from aigc_core.stages import ModelVersion
from tasks.registry import log_served_model, num_classes
from tasks.tracking import Tracker

log = logging.getLogger(__name__)

PARENT_PREFIX = "parent_"  # the parent's metrics on the compression run: parent_<metric>
SIZE_METRICS = ("size_bytes", "parent_size_bytes", "size_ratio")


@dataclass(frozen=True)
class CompressedVersion:
    """A registered compressed version and what its gate compares: its metrics and its
    parent's, measured on the same held-out data, and the sizes of both on disk."""

    model_name: str
    version: str
    parent_version: str
    family: str
    method: str
    run_id: str  # the compression run (the version's run)
    parent_metrics: Mapping[str, float]
    metrics: Mapping[str, float]
    parent_bytes: int
    bytes: int
    reused: bool  # compressed before (same parent, method and code): nothing recomputed

    @property
    def size_ratio(self) -> float:
        return self.bytes / self.parent_bytes if self.parent_bytes else math.nan


@dataclass(frozen=True)
class CompressionOutcome:
    """The compress stage's result: the version, the tolerance asked, and the alias decision."""

    compressed: CompressedVersion
    tolerance: float
    decision: promotion.AliasDecision

    def to_dict(self) -> dict:
        """The summary a flow returns (and `aigc compress --json` prints)."""
        c, d = self.compressed, self.decision
        metric = families.get(c.family).policy.metric
        return {
            "model_name": c.model_name,
            "version": c.version,
            "parent_version": c.parent_version,
            "family": c.family,
            "method": c.method,
            "run_id": c.run_id,
            "reused": c.reused,
            "metric": metric,
            "parent_value": c.parent_metrics.get(metric),
            "value": c.metrics.get(metric),
            "tolerance": self.tolerance,
            "parent_bytes": c.parent_bytes,
            "bytes": c.bytes,
            "size_ratio": c.size_ratio,
            "decision": d.decision,
            "reason": d.reason,
            "alias": d.alias,
            "alias_version": d.holder,
            "previous_alias_version": d.previous,
            "parent_metrics": dict(c.parent_metrics),
            "metrics": dict(c.metrics),
        }


def check_tolerance(tolerance: float | None) -> float | None:
    """A tolerance asked for (None: the family's): a finite number >= 0, the largest relative
    worsening of the family's primary metric the compressed model may show."""
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(
            f"tolerance must be a finite number >= 0 (0.1: at most 10% worse than the parent), "
            f"got {tolerance!r}"
        )
    return float(tolerance)


def compressible(version: ModelVersion, family: Family) -> Family:
    """`family`, when `version` can be compressed by it: not a compressed version itself, and a
    family with a compression method. A ValueError saying why not."""
    model = f"model {version.name} version {version.version}"
    source = version.tag("compressed_from")
    if source:
        raise ValueError(
            f"{model} is itself compressed (from version {source}, "
            f"{version.tag('compression_method')}); compress its parent instead"
        )
    return check_family(family, model)


def check_family(family: Family, what: str) -> Family:
    """`family` when it has a compression method; else a ValueError naming `what` (e.g. "model
    NAME version 3", "compress=True") and the families that have one."""
    if family.compression is None:
        able = sorted(n for n, f in families.available().items() if f.compression is not None)
        raise ValueError(
            f"{what}: the {family.name} family has no compression method; the families with "
            f"one: {', '.join(able) or 'none'}"
        )
    return family


@task(name="compress")
def compress(
    model_ref: str, home: str, force: bool = False, parent_run_id: str | None = None
) -> CompressedVersion:
    """Compress the version `model_ref` names (NAME, NAME@ALIAS, NAME/VERSION) with its family's
    method, score it and its parent on the parent's snapshot, and register it; or find the
    version that did so before (same parent, method and code) unless `force`. The stage's MLflow
    run nests under `parent_run_id` (a pipeline run) when given."""
    h = Home.resolve(home).ensure()
    tracker = Tracker(h)
    parent = tracker.resolve(model_ref)
    # the parent's files, downloaded at most once into the content batches' model cache
    parent_dir = functools.cache(lambda: content.model_files(h, parent, tracker.download_model))
    family = compressible(parent, content.family_of(parent, parent_dir))
    method = family.compression.method
    if not force:
        done = tracker.find_version(
            parent.name,
            stages.tags(
                compressed_from=parent.version,
                compression_method=method,
                code_digest=provenance.code_digest(),
            ),
        )
        if done is not None:
            log.info(
                "version %s of %s is version %s compressed (%s) by this code: reused "
                "(force compresses again)",
                done.version, parent.name, parent.version, method,
            )  # fmt: skip
            return _recorded(tracker, done, parent, family, method)

    snapshot_id = parent.tag("snapshot_id")
    if not snapshot_id:
        raise LookupError(
            f"model {parent.name} version {parent.version} has no snapshot_id tag, so its "
            "compressed copy cannot be scored on its held-out data; register it through the "
            "nightly pipeline"
        )
    snap = find_snapshot(h.datasets, snapshot_id)
    tags = stages.tags(
        stage="compress",
        family=family.name,
        snapshot_id=snap.id,
        dataset=snap.name,
        flow_run_id=flow_run.get_id() or "",
        git_revision=provenance.git_revision(),
        code_digest=provenance.code_digest(),
        compressed_from=parent.version,
        compression_method=method,
    )
    run_name = f"compress-{parent.name}-v{parent.version}"
    run_id = tracker.start_run(run_name, tags, parent_run_id)
    with tracker.run(run_id, finish=True):
        progress.report("compress", 0, 1)
        table = read_table(snap)
        out_dir = names.inside(h.root, h.runs / run_id / "model")
        made = compression.compress(
            family, compression.CompressInputs(parent_dir(), out_dir, table, snap.manifest)
        )
        progress.report("compress", 1, 1)

        # the same held-out data, evaluators and seeds for both: the numbers compare
        progress.report("evaluate", 0, 2)
        inputs = EvalInputs(
            model_dir=parent_dir(),
            checkpoint_dir=names.inside(h.root, h.runs / (parent.run_id or "-") / "checkpoints"),
            snapshot_id=snap.id,
            table=table,
            manifest=snap.manifest,
            evaluators_dir=h.evaluators,
            final=_final(tracker, parent, family),
        )
        before = family.evaluate(inputs)
        progress.report("evaluate", 1, 2)
        after = family.evaluate(dataclasses.replace(inputs, model_dir=made.out_dir))
        progress.report("evaluate", 2, 2)
        tracker.log_params(
            run_id,
            {"compression_method": method, "compressed_from": parent.version, "model": parent.name},
        )
        tracker.log_metrics(
            run_id,
            {
                **{f"{PARENT_PREFIX}{k}": v for k, v in before.metrics.items()},
                **after.metrics,
                "parent_size_bytes": made.parent_bytes,
                "size_bytes": made.bytes,
                "size_ratio": made.bytes / made.parent_bytes,
            },
        )
        for name, image in after.images.items():
            tracker.log_image(run_id, image, name)
        for name, rows in after.tables.items():
            tracker.log_table(run_id, pd.DataFrame(rows), name)

        progress.report("register", 0, 1)
        uri = log_served_model(tracker, family, run_id, made.out_dir)
        lineage = stages.tags(
            family=family.name,
            snapshot_id=snap.id,
            dataset=snap.name,
            run_id=run_id,
            flow_run_id=stages.tag(tags, "flow_run_id"),
            git_revision=stages.tag(tags, "git_revision"),
            code_digest=stages.tag(tags, "code_digest"),
            preset=parent.tag("preset") or None,
            num_classes=num_classes(family, made.out_dir),
            compressed_from=parent.version,
            compressed_from_run=parent.run_id or None,
            compression_method=method,
        )
        gate = promotion.gate_tags(after.metrics, family.policy)
        version = tracker.register(uri, parent.name, tags={**lineage, **gate})
        compressed = CompressedVersion(
            parent.name, version, parent.version, family.name, method, run_id,
            dict(before.metrics), dict(after.metrics), made.parent_bytes, made.bytes, False,
        )  # fmt: skip
        tracker.describe_version(parent.name, version, describe(compressed, family))
        progress.report("register", 1, 1)
    log.info("%s", after.summary)
    return compressed


@task(name="gate-compressed")
def gate_compressed(
    compressed: CompressedVersion, home: str, tolerance: float | None = None
) -> CompressionOutcome:
    """Move `champion-compressed` to the compressed version when its quality stays within
    `tolerance` (None: the family's) of its parent's, and its parent is the champion; otherwise
    refuse with the numbers. Recorded in its tags and the audit log either way."""
    h = Home.resolve(home)
    tracker = Tracker(h)
    family = families.get(compressed.family)
    chosen = check_tolerance(tolerance)
    tol = family.compression.tolerance if chosen is None else chosen
    within, reason = compression.within_tolerance(
        compressed.parent_metrics, compressed.metrics, family.policy, tol
    )
    m = family.policy.metric
    decision = promotion.gate_compressed(
        tracker,
        h,
        compressed.model_name,
        compressed.version,
        compressed.parent_version,
        within,
        reason,
        actor=f"flow-run:{flow_run.get_id() or 'none'}",
        record={
            "method": compressed.method,
            "tolerance": tol,
            "policy_metric": m,
            "parent_metrics": {
                k: compressed.parent_metrics.get(k) for k in family.policy.gate_metrics
            },
            "candidate_metrics": {k: compressed.metrics.get(k) for k in family.policy.gate_metrics},
            "parent_bytes": compressed.parent_bytes,
            "bytes": compressed.bytes,
        },
    )
    return CompressionOutcome(compressed, tol, decision)


def describe(c: CompressedVersion, family: Family) -> str:
    """A compressed version's description in the registry: what it came from, how, its size
    and the gate's metrics beside its parent's."""
    lines = [
        f"**{c.family}** version {c.parent_version} compressed with `{c.method}`: "
        f"{c.parent_bytes:,} -> {c.bytes:,} bytes on disk ({c.size_ratio:.2f}x).",
        "",
        "Scored on the parent's snapshot with the parent's held-out data and seeds:",
        "",
    ]
    for m in family.policy.gate_metrics:
        if m in c.metrics:
            lines.append(
                f"- {m}: {c.metrics[m]:.4g} (parent {c.parent_metrics.get(m, math.nan):.4g})"
            )
    return "\n".join(lines)


def _final(tracker: Tracker, parent: ModelVersion, family: Family) -> dict[str, float]:
    """The parent's training run's final metrics, as its evaluate stage read them."""
    if not parent.run_id:
        return {}
    logged = tracker.run_metrics(parent.run_id)
    return {k: logged[m] for k, m in family.final_metrics.items() if m in logged}


def _recorded(
    tracker: Tracker, done: ModelVersion, parent: ModelVersion, family: Family, method: str
) -> CompressedVersion:
    """A version compressed before, with the metrics and sizes its run recorded."""
    logged = tracker.run_metrics(done.run_id)
    parent_metrics = {
        k[len(PARENT_PREFIX) :]: v
        for k, v in logged.items()
        if k.startswith(PARENT_PREFIX) and k not in SIZE_METRICS
    }
    metrics = {
        k: v for k, v in logged.items() if not k.startswith(PARENT_PREFIX) and k not in SIZE_METRICS
    }
    return CompressedVersion(
        parent.name, done.version, parent.version, family.name, method, done.run_id,
        parent_metrics, metrics, int(logged.get("parent_size_bytes", 0)),
        int(logged.get("size_bytes", 0)), True,
    )  # fmt: skip
