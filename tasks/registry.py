"""Tasks of the register and promote stages."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import task

from aigc_core import progress
from aigc_core.models.io import CONFIG, WEIGHTS
from aigc_core.paths import Home
from aigc_core.promotion import GatePolicy, decide
from tasks import mlflow_adapter as tracking

log = logging.getLogger(__name__)

POLICIES = {"dcgan": GatePolicy(metric="fid", lower_is_better=True, min_improvement=0.0)}
GATE_TAG_PREFIX = "gate."


@task(name="register")
def register(trained: dict, metrics: dict, home: str) -> dict:
    """Log the model as a pyfunc from code, register a version, and point `challenger` at it."""
    h = Home.resolve(home)
    tracking.configure(h)
    run_id, name = trained["run_id"], trained["model_name"]
    progress.report("register", 0, 1)
    with tracking.run_guard(run_id, finish=True):
        model_dir = Path(trained["model_dir"])
        example_in = pd.DataFrame({"n": [2], "seed": [0]})
        example_out = _example_output(model_dir, example_in)
        uri = tracking.log_model(
            run_id,
            trained["family"],
            {"weights": model_dir / WEIGHTS, "config": model_dir / CONFIG},
            example_in,
            example_out,
        )
        policy = POLICIES[trained["family"]]
        version = tracking.register(
            uri,
            name,
            tags={
                "snapshot_id": trained["snapshot_id"],
                "run_id": run_id,
                "flow_run_id": tracking.client().get_run(run_id).data.tags.get("flow_run_id", ""),
                "git_revision": tracking.git_revision(),
                "preset": trained["preset"],
                **{f"{GATE_TAG_PREFIX}{policy.metric}": metrics[policy.metric]},
                f"{GATE_TAG_PREFIX}fid_floor": metrics["fid_floor"],
                f"{GATE_TAG_PREFIX}evaluator_accuracy": metrics["evaluator_accuracy"],
            },
        )
        tracking.set_alias(name, tracking.CHALLENGER, version)
    progress.report("register", 1, 1)
    return {"model_name": name, "version": version, "model_uri": uri, "run_id": run_id}


def _example_output(model_dir: Path, example_in: pd.DataFrame) -> pd.DataFrame:
    """Run the pyfunc class on the example, exactly as serving will, to infer the signature."""
    from types import SimpleNamespace

    from aigc_core.serving.image_generator import ImageGenerator

    m = ImageGenerator()
    m.load_context(
        SimpleNamespace(
            artifacts={"weights": str(model_dir / WEIGHTS), "config": str(model_dir / CONFIG)}
        )
    )
    return m.predict(None, example_in)


@task(name="promote")
def promote(registered: dict, metrics: dict, family: str, home: str) -> dict:
    """Move `champion` to the new version when the gate says it is better; record why."""
    h = Home.resolve(home)
    tracking.configure(h)
    name, version = registered["model_name"], registered["version"]
    policy = POLICIES[family]
    current = tracking.alias_version(name, tracking.CHAMPION)
    tag = f"{GATE_TAG_PREFIX}{policy.metric}"
    champion_metrics = None
    if current is not None:
        champion_metrics = {policy.metric: float(current.tags[tag])} if tag in current.tags else {}
    decision = decide(
        metrics, champion_metrics, policy, champion_version=current.version if current else None
    )
    if decision.promote:
        tracking.set_alias(name, tracking.CHAMPION, version)
    tracking.tag_version(
        name,
        version,
        {
            "promotion.decision": "promoted" if decision.promote else "rejected",
            "promotion.reason": decision.reason,
            "promotion.previous_champion": current.version if current else "none",
            "promotion.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    champion = version if decision.promote else (current.version if current else None)
    log.info(
        "version %s of %s %s: %s",
        version,
        name,
        "promoted" if decision.promote else "not promoted",
        decision.reason,
    )
    return {
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion_version": champion,
        "previous_champion": current.version if current else None,
    }
