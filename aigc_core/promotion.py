"""Promotion: the gate's decision, and the compare-and-set service that acts on it.

The decision is a pure function of metrics and a policy. A family's policy (`family.policy`)
names the primary metric and its direction, the margin a candidate must win by, and hard floors
(limits any candidate must meet whatever the champion scores: an evaluator good enough for its
scores to mean something, a maximum memorization rate).

`promote_version` acts on a registry (anything with the four methods of `Registry`; the tracker
in `tasks/tracking.py` is one): under the model's promotion lock it reads the champion, asks
`decide`, reads the champion again and moves the alias only if it is still the one compared.
Every decision, promoted or not, goes to the candidate's version tags and to the append-only
audit log `<home>/registry/audit.jsonl`; `rollback` walks back through the promotions.
`gate_compressed` does the same for `champion-compressed`: it points at a compressed version of
the champion only when its quality stayed within the family's tolerance of the champion's.

The lock is a file lock (flock) under the home taken together with an in-process lock: it
serializes threads and processes on ONE machine that share the home. MLflow's alias update is an
unconditional overwrite, so it does not serialize promoters on different machines (or homes on
NFS, where flock is unreliable); for that, promote through one process (the served-mode MLflow
server's host) or replace it with a database-level lock on the tracking backend (e.g. a Postgres
advisory lock). The alias is re-read after it is set to detect writers that bypass the lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from aigc_core import names
from aigc_core.paths import Home
from aigc_core.stages import ModelVersion, PromotionResult

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"  # serving, and the latest candidate
# the champion's compressed version, set only when its quality stays within the family's
# tolerance of the champion's (`gate_compressed`)
CHAMPION_COMPRESSED = "champion-compressed"
GATE_TAG_PREFIX = "gate."
# the family of a version registered before versions carried a "family" tag
UNTAGGED_FAMILY = "dcgan"


@dataclass(frozen=True)
class GatePolicy:
    metric: str = "fid"
    lower_is_better: bool = True
    min_improvement: float = 0.0  # absolute margin the candidate must win by
    minimums: Mapping[str, float] = field(default_factory=dict)  # hard floors: metric >= value
    maximums: Mapping[str, float] = field(default_factory=dict)  # hard ceilings: metric <= value

    @property
    def gate_metrics(self) -> list[str]:
        """Every metric the gate reads: recorded on each version as `gate.<metric>` tags."""
        return list(dict.fromkeys([self.metric, *self.minimums, *self.maximums]))


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def floor_violations(candidate: Mapping[str, float], policy: GatePolicy) -> list[str]:
    """Why the candidate fails the policy's hard floors (empty when it passes them all)."""
    out = []
    for m, lo in policy.minimums.items():
        v = candidate.get(m)
        if not _finite(v):
            out.append(f"{m} missing or not finite ({v!r}), floor >= {lo:g}")
        elif v < lo:
            out.append(f"{m} {v:.4g} below floor {lo:g}")
    for m, hi in policy.maximums.items():
        v = candidate.get(m)
        if not _finite(v):
            out.append(f"{m} missing or not finite ({v!r}), ceiling <= {hi:g}")
        elif v > hi:
            out.append(f"{m} {v:.4g} above ceiling {hi:g}")
    return out


def decide(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    policy: GatePolicy,
    champion_version: str | None = None,
) -> Decision:
    m = policy.metric
    cand = candidate.get(m)
    if not _finite(cand):
        return Decision(False, f"candidate has no finite {m} ({cand!r})")
    violations = floor_violations(candidate, policy)
    if violations:
        return Decision(False, "fails hard floors: " + "; ".join(violations))
    if champion is None:
        return Decision(True, f"no champion yet; candidate {m}={cand:.4g}")
    champ = champion.get(m)
    who = f"champion v{champion_version}" if champion_version else "champion"
    if not _finite(champ):
        return Decision(True, f"{who} has no finite {m}; candidate {m}={cand:.4g}")
    gain = (champ - cand) if policy.lower_is_better else (cand - champ)
    better = "lower" if policy.lower_is_better else "higher"
    if gain > policy.min_improvement:
        return Decision(
            True,
            f"{m} {cand:.4g} beats {who} {champ:.4g} ({better} is better, "
            f"margin {gain:.4g} > {policy.min_improvement:g})",
        )
    return Decision(
        False,
        f"{m} {cand:.4g} does not beat {who} {champ:.4g} ({better} is better, "
        f"needs a margin > {policy.min_improvement:g})",
    )


# --- the registry a promotion acts on, and the gate metrics recorded on its versions ---------


class RegistryError(LookupError):
    """A registry operation named a model, version or alias that is not there."""


class Registry(Protocol):
    """What promotion needs of a model registry (`tasks.tracking.Tracker` has it)."""

    def alias_version(self, name: str, alias: str) -> ModelVersion | None: ...

    def get_version(self, name: str, version: str) -> ModelVersion | None: ...

    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    def tag_version(self, name: str, version: str, tags: Mapping[str, str]) -> None: ...


def gate_tags(metrics: Mapping[str, float], policy: GatePolicy) -> dict[str, str]:
    """The `gate.<metric>` version tags of the metrics the policy reads."""
    return {
        f"{GATE_TAG_PREFIX}{m}": str(float(metrics[m])) for m in policy.gate_metrics if m in metrics
    }


def describe_version(trained, metrics: Mapping[str, float], policy: GatePolicy) -> str:
    """A registered version's description (markdown, shown in the registry): the data it was
    trained on, how, and the gate's metrics with their bounds. `trained`: a
    `stages.TrainedRun`."""
    direction = "lower" if policy.lower_is_better else "higher"
    lines = [
        f"**{trained.family}** ({trained.preset} preset, {trained.steps} steps on "
        f"{trained.device}) trained on dataset `{trained.snapshot.name}`, snapshot "
        f"`{trained.snapshot.id}` ({trained.snapshot.rows} rows).",
        "",
        f"Gate: {policy.metric}, {direction} is better.",
        "",
    ]
    for m in policy.gate_metrics:
        if m not in metrics:
            continue
        bound = []
        if m in policy.minimums:
            bound.append(f">= {policy.minimums[m]:g}")
        if m in policy.maximums:
            bound.append(f"<= {policy.maximums[m]:g}")
        lines.append(
            f"- {m}: {float(metrics[m]):.4g}" + (f" (must be {', '.join(bound)})" if bound else "")
        )
    if trained.parent_version:
        lines += ["", f"Warm-started from version {trained.parent_version}."]
    return "\n".join(lines)


def gate_metrics_of(tags: Mapping[str, str]) -> dict[str, float]:
    """The gate metrics recorded in a version's tags (unparsable values skipped)."""
    out = {}
    for k, v in tags.items():
        if k.startswith(GATE_TAG_PREFIX):
            try:
                out[k[len(GATE_TAG_PREFIX) :]] = float(v)
            except ValueError:
                continue
    return out


def policy_of(version: ModelVersion) -> GatePolicy:
    """The gate policy of the family a version's "family" tag names."""
    from aigc_core import families  # families import this module: not at import time

    return families.get(version.tag("family", UNTAGGED_FAMILY)).policy


# --- the promotion lock and the audit log ------------------------------------------------------

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def registry_dir(home: Home) -> Path:
    return home.root / "registry"


def audit_log_path(home: Home) -> Path:
    return registry_dir(home) / "audit.jsonl"


@contextlib.contextmanager
def promotion_lock(home: Home, name: str, timeout: float = 120.0) -> Iterator[None]:
    """Hold the promotion lock of registered model `name` (threads and processes, one machine)."""
    from filelock import FileLock, Timeout

    path = names.inside(home.root, registry_dir(home) / "locks" / f"{names.model(name)}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCKS_GUARD:
        tlock = _THREAD_LOCKS.setdefault(str(path), threading.Lock())
    if not tlock.acquire(timeout=timeout):
        raise TimeoutError(f"promotion of {name!r}: another promotion held the lock {timeout:g} s")
    try:
        try:
            flock = FileLock(str(path), timeout=timeout)
            flock.acquire()
        except Timeout:
            raise TimeoutError(
                f"promotion of {name!r}: lock {path} held by another process for {timeout:g} s; "
                "if no promotion is running, the holder died: delete the lock file"
            ) from None
        try:
            yield
        finally:
            flock.release()
    finally:
        tlock.release()


def append_audit(home: Home, record: dict) -> dict:
    """Append one decision to the append-only JSONL audit log (one write, fsynced)."""
    record = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), **record}
    path = audit_log_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read_audit(home: Home, name: str | None = None) -> list[dict]:
    """The audit log's records, oldest first; only those of model `name` when given."""
    path = audit_log_path(home)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if name is None or r.get("model_name") == name]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- promote and roll back ---------------------------------------------------------------------


def promote_version(
    registry: Registry,
    home: Home,
    name: str,
    version: str,
    policy: GatePolicy | None = None,
    metrics: Mapping[str, float] | None = None,
    force: bool = False,
    reason: str | None = None,
    actor: str = "",
) -> PromotionResult:
    """Gate `version` of `name` against the champion and move the alias if it wins (or when
    `force`, with a `reason`). Compare-and-set under the promotion lock; every decision recorded.

    `policy` defaults to that of the version's family (its "family" tag); candidate metrics to
    the version's `gate.*` tags. Raises RegistryError for an unknown version, InvalidName (a
    ValueError) for a name or version that breaks `aigc_core.names`' rules."""
    name, version = names.model(name), names.version(version)
    if force and not (reason and reason.strip()):
        raise ValueError(
            "a forced promotion needs a reason (--reason TEXT): it goes in the audit log"
        )
    with promotion_lock(home, name):
        mv = registry.get_version(name, version)
        if mv is None:
            raise RegistryError(
                f"registered model {name!r} has no version {version!r}; `aigc models` lists them"
            )
        policy = policy or policy_of(mv)
        candidate = dict(metrics) if metrics is not None else gate_metrics_of(mv.tags)
        current = registry.alias_version(name, CHAMPION)
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
            now = registry.alias_version(name, CHAMPION)
            if (now.version if now else None) != prev:
                decision = Decision(
                    False,
                    f"champion changed from v{prev} to v{now.version if now else None} during the "
                    "decision (a writer bypassed the promotion lock); not promoted",
                )
                outcome = "conflict"
            else:
                registry.set_alias(name, CHAMPION, version)
        after = registry.alias_version(name, CHAMPION)
        champion_after = after.version if after else None
        if decision.promote and champion_after != version:  # a writer outside the lock
            log.error(
                "champion of %s is v%s right after promoting v%s", name, champion_after, version
            )
        if outcome != "unchanged":
            registry.tag_version(
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
        append_audit(
            home,
            {
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
            },
        )
    log.info("version %s of %s %s: %s", version, name, outcome, decision.reason)
    return PromotionResult(decision.promote, outcome, decision.reason, champion_after, prev)


def rollback(registry: Registry, home: Home, name: str, reason: str = "", actor: str = "") -> dict:
    """Point `champion` back at the champion the current one replaced; record it. Returns
    {model_name, champion_version, previous_champion}.

    The previous champion is the current champion's `promotion.previous_champion` tag, so
    repeated rollbacks walk back through the history of promotions."""
    name = names.model(name)
    with promotion_lock(home, name):
        current = registry.alias_version(name, CHAMPION)
        if current is None:
            raise RegistryError(f"registered model {name!r} has no champion to roll back")
        prev = current.tags.get("promotion.previous_champion", "none")
        if prev in ("", "none") or registry.get_version(name, prev) is None:
            raise RegistryError(
                f"champion v{current.version} of {name!r} records no previous champion "
                f"({prev!r}); choose one with `aigc promote {name} VERSION --force --reason TEXT`"
            )
        registry.set_alias(name, CHAMPION, prev)
        why = reason.strip() or "rollback"
        at = _now()
        registry.tag_version(
            name,
            current.version,
            {"rollback.demoted_at": at, "rollback.reason": why, "rollback.restored": prev},
        )
        registry.tag_version(
            name, prev, {"rollback.restored_at": at, "rollback.replaced": current.version}
        )
        append_audit(
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


# --- the compressed champion's alias ------------------------------------------------------------


@dataclass(frozen=True)
class AliasDecision:
    """What `gate_compressed` did: `decision` is accepted (the alias moved), refused (outside
    the tolerance), not-champion (within it, but its parent is not the champion) or unchanged
    (the version holds the alias already); `holder` holds the alias after, `previous` before."""

    moved: bool
    decision: str
    reason: str
    alias: str
    holder: str | None
    previous: str | None


def gate_compressed(
    registry: Registry,
    home: Home,
    name: str,
    version: str,
    parent_version: str,
    within: bool,
    reason: str,
    actor: str = "",
    record: Mapping[str, object] | None = None,
) -> AliasDecision:
    """Point `champion-compressed` at compressed `version` of `name` when its quality is
    `within` the family's tolerance of its parent's (`reason` names the numbers and the limit,
    as `aigc_core.compression.within_tolerance` says them) and the parent is the champion; else
    move no alias. Under the promotion lock, so that the champion read is the one in force; every
    decision goes to the version's `compression.*` tags and to the audit log (with `record`:
    the metrics and sizes compared, the method, the tolerance).

    The alias names a compression of the champion: a compressed version of another version is
    kept (served by NAME/VERSION) but never gets it. A version that already holds the alias
    keeps it ("unchanged"), whatever the tolerance asked now. Raises RegistryError for an
    unknown version."""
    name, version = names.model(name), names.version(version)
    alias = CHAMPION_COMPRESSED
    with promotion_lock(home, name):
        if registry.get_version(name, version) is None:
            raise RegistryError(
                f"registered model {name!r} has no version {version!r}; `aigc models` lists them"
            )
        current = registry.alias_version(name, alias)
        previous = current.version if current else None
        champion = registry.alias_version(name, CHAMPION)
        champion_version = champion.version if champion else None
        if previous == version:
            outcome, why = "unchanged", f"v{version} already holds {alias}"
        elif not within:
            outcome, why = "refused", reason
        elif champion_version != parent_version:
            outcome = "not-champion"
            why = (
                f"{reason}; but its parent v{parent_version} is not the champion "
                f"(v{champion_version}): {alias} names a compression of the champion, so this "
                f"one is served as {name}/{version}"
            )
        else:
            outcome, why = "accepted", reason
            registry.set_alias(name, alias, version)
        after = registry.alias_version(name, alias)
        holder = after.version if after else None
        if outcome == "accepted" and holder != version:  # a writer outside the lock
            log.error("%s of %s is v%s right after setting it to v%s", alias, name, holder, version)
        if outcome != "unchanged":
            registry.tag_version(
                name,
                version,
                {
                    "compression.decision": outcome,
                    "compression.reason": why,
                    "compression.previous_holder": previous or "none",
                    "compression.decided_at": _now(),
                    "compression.actor": actor,
                },
            )
        append_audit(
            home,
            {
                "action": "compress",
                "model_name": name,
                "version": version,
                "parent_version": parent_version,
                "alias": alias,
                "decision": outcome,
                "reason": why,
                "actor": actor,
                "previous_holder": previous,
                "holder_after": holder,
                "champion": champion_version,
                **dict(record or {}),
            },
        )
    log.info("compressed version %s of %s %s: %s", version, name, outcome, why)
    return AliasDecision(outcome == "accepted", outcome, why, alias, holder, previous)
