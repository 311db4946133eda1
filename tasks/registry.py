"""Tasks of the register and promote stages, and the registry services the CLI calls.

Registering logs the served module as a pyfunc model from code and makes it a new version,
`challenger`, tagged with its lineage and gate metrics. Promoting is the compare-and-set of
`aigc_core.promotion`, acting on the tracker; every decision is recorded in the version's tags
and in the audit log (`<home>/registry/audit.jsonl`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.runtime import flow_run

from aigc_core import families, progress, promotion, provenance
from aigc_core.models.io import CONFIG, WEIGHTS
from aigc_core.paths import Home
from aigc_core.stages import PromotionResult, RegisteredVersion, Scores, TrainedRun
from tasks.tracking import CHALLENGER, Tracker


@task(name="register")
def register(trained: TrainedRun, scores: Scores, home: str) -> RegisteredVersion:
    """Log the model as a pyfunc from code, register a version, and point `challenger` at it."""
    tracker = Tracker(Home.resolve(home))
    family, run_id, name = families.get(trained.family), trained.run_id, trained.model_name
    progress.report("register", 0, 1)
    with tracker.run(run_id, finish=True):
        model_dir = Path(trained.model_dir)
        artifacts = {"weights": model_dir / WEIGHTS, "config": model_dir / CONFIG}
        # the example request goes through the generator as serving will: the signature
        example_in = pd.DataFrame(dict(family.input_example))
        generator = family.load_generator(artifacts["weights"], artifacts["config"])
        uri = tracker.log_model(run_id, artifacts, example_in, generator.predict(example_in))
        lineage = {
            "family": trained.family,
            "snapshot_id": trained.snapshot.id,
            "run_id": run_id,
            "flow_run_id": tracker.run_tags(run_id).get("flow_run_id", ""),
            "git_revision": provenance.git_revision(),
            "preset": trained.preset,
        }
        if trained.parent_version:  # warm start: the version it was initialised from
            lineage["parent_version"] = str(trained.parent_version)
            lineage["parent_model_uri"] = trained.parent_model_uri or ""
        gate = promotion.gate_tags(scores.metrics, family.policy)
        version = tracker.register(uri, name, tags={**lineage, **gate})
        tracker.set_alias(name, CHALLENGER, version)
    progress.report("register", 1, 1)
    return RegisteredVersion(name, version, uri, run_id)


@task(name="promote")
def promote(
    registered: RegisteredVersion, scores: Scores, family: str, home: str
) -> PromotionResult:
    """Move `champion` to the new version when the family's gate says it is better; record why."""
    h = Home.resolve(home)
    return promotion.promote_version(
        Tracker(h),
        h,
        registered.model_name,
        registered.version,
        families.get(family).policy,
        metrics=scores.metrics,
        actor=f"flow-run:{flow_run.get_id() or 'none'}",
    )


# --- services of `aigc promote`, `aigc rollback` and `aigc models` ---------------------------


def promote_version(
    home: Home, name: str, version: str, force: bool = False, reason: str | None = None, actor=""
) -> PromotionResult:
    """Gate `version` of `name` against the champion by its family's policy and recorded gate
    metrics (or force it, with a reason); see `aigc_core.promotion.promote_version`."""
    return promotion.promote_version(
        Tracker(home), home, name, version, force=force, reason=reason, actor=actor
    )


def rollback(home: Home, name: str, reason: str = "", actor: str = "") -> dict:
    """Point `champion` back at the champion the current one replaced (recorded)."""
    return promotion.rollback(Tracker(home), home, name, reason=reason, actor=actor)


def list_models(home: Home, name: str | None = None) -> list[dict]:
    """The registered models (only `name`'s when given) with versions, aliases and tags."""
    return [m for m in Tracker(home).list_models() if name in (None, m["name"])]


def audit(home: Home, name: str | None = None) -> list[dict]:
    """The promotion audit log, oldest first (only model `name`'s when given)."""
    return promotion.read_audit(home, name)
