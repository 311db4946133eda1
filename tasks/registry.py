"""Tasks of the register and promote stages, and the registry operations the CLI shares.

Promotion is compare-and-set: under the model's promotion lock (see
`mlflow_adapter.promotion_lock`) the champion is read, the gate compares, the champion is read
again and the alias moves only if it is still the one compared. Every decision, promoted or not,
is written to the candidate's version tags and appended to the audit log
(`<home>/registry/audit.jsonl`).
"""

from __future__ import annotations

import importlib
import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import task

from aigc_core import names, progress
from aigc_core.models.io import CONFIG, WEIGHTS
from aigc_core.paths import Home
from aigc_core.promotion import POLICIES, Decision, GatePolicy, decide, policy_for
from aigc_core.serving import pyfunc_file
from tasks import mlflow_adapter as tracking

log = logging.getLogger(__name__)

__all__ = ["POLICIES", "promote", "promote_version", "register", "rollback"]

GATE_TAG_PREFIX = "gate."
# the request a family's pyfunc model takes; a trained dict may bring its own "input_example"
INPUT_EXAMPLES = {
    "dcgan": {"n": [2], "seed": [0]},
    "vae": {"n": [2], "seed": [0]},
}


class RegistryError(LookupError):
    """A registry operation named a model, version or alias that is not there."""


def gate_tags(metrics: dict, policy: GatePolicy) -> dict[str, str]:
    return {
        f"{GATE_TAG_PREFIX}{m}": str(float(metrics[m])) for m in policy.gate_metrics if m in metrics
    }


def gate_metrics_of(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for k, v in tags.items():
        if k.startswith(GATE_TAG_PREFIX):
            try:
                out[k[len(GATE_TAG_PREFIX) :]] = float(v)
            except ValueError:
                continue
    return out


@task(name="register")
def register(trained: dict, metrics: dict, home: str) -> dict:
    """Log the model as a pyfunc from code, register a version, and point `challenger` at it."""
    h = Home.resolve(home)
    tracking.configure(h)
    run_id, name, family = trained["run_id"], trained["model_name"], trained["family"]
    policy = policy_for(family)
    progress.report("register", 0, 1)
    with tracking.run_guard(run_id, finish=True):
        model_dir = Path(trained["model_dir"])
        artifacts = {k: Path(v) for k, v in trained.get("artifacts", {}).items()} or {
            "weights": model_dir / WEIGHTS,
            "config": model_dir / CONFIG,
        }
        example_in = pd.DataFrame(trained.get("input_example") or INPUT_EXAMPLES[family])
        example_out = _example_output(family, artifacts, example_in)
        uri = tracking.log_model(run_id, family, artifacts, example_in, example_out)
        run_tags = tracking.client().get_run(run_id).data.tags
        lineage = {
            "family": family,
            "snapshot_id": trained["snapshot_id"],
            "run_id": run_id,
            "flow_run_id": run_tags.get("flow_run_id", ""),
            "git_revision": tracking.git_revision(),
            "preset": trained.get("preset", ""),
        }
        if trained.get("parent_version"):  # warm start: the version it was initialised from
            lineage["parent_version"] = str(trained["parent_version"])
            lineage["parent_model_uri"] = trained.get("parent_model_uri", "")
        version = tracking.register(uri, name, tags={**lineage, **gate_tags(metrics, policy)})
        tracking.set_alias(name, tracking.CHALLENGER, version)
    progress.report("register", 1, 1)
    return {"model_name": name, "version": version, "model_uri": uri, "run_id": run_id}


def _example_output(family: str, artifacts: dict[str, Path], example_in: pd.DataFrame):
    """Run the family's pyfunc class on the example, exactly as serving will, to infer the
    signature."""
    from types import SimpleNamespace

    from mlflow.pyfunc import PythonModel

    module = importlib.import_module(f"aigc_core.serving.{pyfunc_file(family).stem}")
    classes = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, PythonModel) and c.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise ValueError(
            f"{module.__name__} must define exactly one PythonModel class, found {len(classes)}"
        )
    m = classes[0]()
    m.load_context(SimpleNamespace(artifacts={k: str(v) for k, v in artifacts.items()}))
    return m.predict(None, example_in)


@task(name="promote")
def promote(registered: dict, metrics: dict, family: str, home: str) -> dict:
    """Move `champion` to the new version when the gate says it is better; record why."""
    h = Home.resolve(home)
    tracking.configure(h)
    from prefect.runtime import flow_run

    return promote_version(
        h,
        registered["model_name"],
        registered["version"],
        family=family,
        metrics=metrics,
        actor=f"flow-run:{flow_run.get_id() or 'none'}",
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def promote_version(
    home: Home,
    name: str,
    version: str,
    family: str | None = None,
    metrics: dict | None = None,
    force: bool = False,
    reason: str | None = None,
    actor: str = "",
) -> dict:
    """Gate `version` of `name` against the champion and move the alias if it wins (or when
    `force`, with a `reason`). Compare-and-set under the promotion lock; every decision recorded.

    Candidate metrics default to the version's `gate.*` tags. Returns {promoted, decision,
    reason, champion_version, previous_champion}. Raises RegistryError for an unknown version,
    InvalidName (a ValueError) for a name or version that breaks `aigc_core.names`' rules."""
    name, version = names.model(name), names.version(version)
    if force and not (reason and reason.strip()):
        raise ValueError(
            "a forced promotion needs a reason (--reason TEXT): it goes in the audit log"
        )
    with tracking.promotion_lock(home, name):
        mv = tracking.get_version(name, version)
        if mv is None:
            raise RegistryError(
                f"registered model {name!r} has no version {version!r}; `aigc models` lists them"
            )
        policy = policy_for(family or mv.tags.get("family", "dcgan"))
        candidate = dict(metrics) if metrics is not None else gate_metrics_of(mv.tags)
        current = tracking.alias_version(name, tracking.CHAMPION)
        prev = current.version if current else None
        champion_metrics = gate_metrics_of(current.tags) if current else None
        if prev == version:
            decision, outcome = Decision(False, f"v{version} is already the champion"), "unchanged"
        else:
            if force:
                decision = Decision(True, f"forced by {actor or 'unknown'}: {reason.strip()}")
            else:
                decision = decide(candidate, champion_metrics, policy, champion_version=prev)
            outcome = "promoted" if decision.promote else "rejected"
        if decision.promote:
            # compare-and-set: move the alias only if the champion is still the one compared
            now = tracking.alias_version(name, tracking.CHAMPION)
            if (now.version if now else None) != prev:
                decision = Decision(
                    False,
                    f"champion changed from v{prev} to v{now.version if now else None} during the "
                    "decision (a writer bypassed the promotion lock); not promoted",
                )
                outcome = "conflict"
            else:
                tracking.set_alias(name, tracking.CHAMPION, version)
        after = tracking.alias_version(name, tracking.CHAMPION)
        champion_after = after.version if after else None
        if decision.promote and champion_after != version:  # a writer outside the lock
            log.error(
                "champion of %s is v%s right after promoting v%s", name, champion_after, version
            )
        record = {
            "action": "promote",
            "model_name": name,
            "version": version,
            "decision": outcome,
            "reason": decision.reason,
            "forced": force,
            "actor": actor,
            "previous_champion": prev,
            "champion_after": champion_after,
            "policy_metric": policy.metric,
            "candidate_metrics": {m: candidate.get(m) for m in policy.gate_metrics},
            "champion_metrics": champion_metrics,
        }
        if outcome != "unchanged":
            tracking.tag_version(
                name,
                version,
                {
                    "promotion.decision": outcome,
                    "promotion.reason": decision.reason,
                    "promotion.previous_champion": prev or "none",
                    "promotion.decided_at": _now(),
                    "promotion.forced": str(force).lower(),
                    "promotion.actor": actor,
                },
            )
        tracking.append_audit(home, record)
    log.info("version %s of %s %s: %s", version, name, outcome, decision.reason)
    return {
        "promoted": decision.promote,
        "decision": outcome,
        "reason": decision.reason,
        "champion_version": champion_after,
        "previous_champion": prev,
    }


def rollback(home: Home, name: str, reason: str = "", actor: str = "") -> dict:
    """Point `champion` back at the champion the current one replaced; record it.

    The previous champion is the current champion's `promotion.previous_champion` tag, so
    repeated rollbacks walk back through the history of promotions."""
    name = names.model(name)
    with tracking.promotion_lock(home, name):
        current = tracking.alias_version(name, tracking.CHAMPION)
        if current is None:
            raise RegistryError(f"registered model {name!r} has no champion to roll back")
        prev = current.tags.get("promotion.previous_champion", "none")
        if prev in ("", "none") or tracking.get_version(name, prev) is None:
            raise RegistryError(
                f"champion v{current.version} of {name!r} records no previous champion "
                f"({prev!r}); choose one with `aigc promote {name} VERSION --force --reason TEXT`"
            )
        tracking.set_alias(name, tracking.CHAMPION, prev)
        why = reason.strip() or "rollback"
        at = _now()
        tracking.tag_version(
            name,
            current.version,
            {"rollback.demoted_at": at, "rollback.reason": why, "rollback.restored": prev},
        )
        tracking.tag_version(
            name, prev, {"rollback.restored_at": at, "rollback.replaced": current.version}
        )
        tracking.append_audit(
            home,
            {
                "action": "rollback",
                "model_name": name,
                "version": prev,
                "decision": "restored",
                "reason": why,
                "actor": actor,
                "previous_champion": current.version,
                "champion_after": prev,
            },
        )
    log.info("%s: champion rolled back from v%s to v%s", name, current.version, prev)
    return {"model_name": name, "champion_version": prev, "previous_champion": current.version}
