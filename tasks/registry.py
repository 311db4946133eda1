"""Tasks of the register and promote stages, and the registry services the CLI calls.

Registering logs the served module as a pyfunc model from code and makes it a new version,
`challenger`, tagged with its lineage, its classes (`aigc.num_classes`, image and audio
models) and gate metrics. Promoting is the compare-and-set of `aigc_core.promotion`, acting on
the tracker; every decision is recorded in the version's tags and in the audit log
(`<home>/registry/audit.jsonl`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.runtime import flow_run

from aigc_core import families, progress, promotion, provenance, stages
from aigc_core.models.io import CONFIG, WEIGHTS, read_config
from aigc_core.paths import Home
from aigc_core.stages import PromotionResult, RegisteredVersion, Scores, TrainedRun
from tasks.tracking import CHALLENGER, Tracker

log = logging.getLogger(__name__)


@task(name="register")
def register(trained: TrainedRun, scores: Scores, home: str) -> RegisteredVersion:
    """Log the model as a pyfunc from code, register a version, and point `challenger` at it."""
    tracker = Tracker(Home.resolve(home))
    family, run_id, name = families.get(trained.family), trained.run_id, trained.model_name
    progress.report("register", 0, 1)
    with tracker.run(run_id, finish=True):
        model_dir = Path(trained.model_dir)
        uri = log_served_model(tracker, family, run_id, model_dir)
        lineage = stages.tags(
            family=trained.family,
            snapshot_id=trained.snapshot.id,
            dataset=trained.snapshot.name,
            run_id=run_id,
            flow_run_id=stages.tag(tracker.run_tags(run_id), "flow_run_id"),
            git_revision=provenance.git_revision(),
            code_digest=provenance.code_digest(),
            config_digest=trained.config_digest or None,
            preset=trained.preset,
            # warm start: the version it was initialised from
            parent_version=trained.parent_version,
            parent_model_uri=trained.parent_model_uri if trained.parent_version else None,
            # the classes an image or audio model takes (0: unconditional), as the batch plan
            # reads them from the saved config: `aigc generate` checks --labels against it first
            num_classes=num_classes(family, model_dir),
        )
        gate = promotion.gate_tags(scores.metrics, family.policy)
        version = tracker.register(uri, name, tags={**lineage, **gate})
        tracker.set_alias(name, CHALLENGER, version)
        about = promotion.describe_version(trained, scores.metrics, family.policy)
        tracker.describe_version(name, version, about)
    progress.report("register", 1, 1)
    return RegisteredVersion(name, version, uri, run_id, about)


def log_served_model(tracker: Tracker, family, run_id: str, model_dir: Path) -> str:
    """Log the saved model in `model_dir` on run `run_id` as the family's pyfunc; its URI. The
    example request goes through the generator as serving will: the signature (its params
    schema from the family's params, e.g. a text model's sampling options)."""
    artifacts = {"weights": Path(model_dir) / WEIGHTS, "config": Path(model_dir) / CONFIG}
    example_in, params = pd.DataFrame(dict(family.input_example)), dict(family.params_example)
    generator = family.load_generator(artifacts["weights"], artifacts["config"])
    example_out = generator.predict(example_in, params) if params else generator.predict(example_in)
    return tracker.log_model(run_id, artifacts, example_in, example_out, params=params)


def num_classes(family, model_dir: Path) -> int | None:
    """The `num_classes` of an image or audio model's saved config (absent: 0,
    unconditional); None for a text model, which takes no labels whatever its config says."""
    if family.kind == "text":
        return None
    return int(read_config(Path(model_dir) / CONFIG).get("num_classes") or 0)


@task(name="promote")
def promote(
    registered: RegisteredVersion, scores: Scores, family: str, home: str
) -> PromotionResult:
    """Move `champion` to the new version when the family's gate says it is better; record why
    (tags, audit log, and the version's description)."""
    h = Home.resolve(home)
    tracker = Tracker(h)
    result = promotion.promote_version(
        tracker,
        h,
        registered.model_name,
        registered.version,
        families.get(family).policy,
        metrics=scores.metrics,
        actor=f"flow-run:{flow_run.get_id() or 'none'}",
    )
    decision = f"Gate: {result.decision}: {result.reason}"
    about = f"{decision}\n\n{registered.description}" if registered.description else decision
    tracker.describe_version(registered.model_name, registered.version, about)
    return result


@task(name="find-unchanged")
def find_unchanged(
    model_name: str, snapshot_id: str, family: str, config_digest: str, home: str
) -> tuple[RegisteredVersion, Scores, PromotionResult] | None:
    """The registered version trained on this snapshot with this family, resolved config and
    code (the night's work done before), as the stages after training would report it; None
    when there is none (train then)."""
    tracker = Tracker(Home.resolve(home))
    wanted = stages.tags(
        family=family,
        snapshot_id=snapshot_id,
        config_digest=config_digest,
        code_digest=provenance.code_digest(),
    )
    found = tracker.find_version(model_name, wanted)
    if found is None:
        return None
    champion = tracker.alias_version(model_name, promotion.CHAMPION)
    champion_version = champion.version if champion else None
    reason = (
        f"unchanged: version {found.version} was trained on snapshot {snapshot_id} with the "
        "same config and code; nothing retrained (--force retrains)"
    )
    log.info("%s", reason)
    return (
        RegisteredVersion(
            model_name, found.version, f"models:/{model_name}/{found.version}", found.run_id
        ),
        Scores(found.run_id, tracker.run_metrics(found.run_id)),
        PromotionResult(False, "unchanged", reason, champion_version, champion_version),
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
