"""The promotion gate's decision, as a pure function of metrics and a policy.

A policy per model family names the primary metric and its direction, the margin a candidate
must win by, and hard floors (limits any candidate must meet whatever the champion scores: an
evaluator good enough for its scores to mean something, a maximum memorization rate). The
registry adapter reads the current champion's gate metrics, calls `decide`, and records the
returned reason on the candidate version whatever the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


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


# Per family. Image families gate on FID in the evaluator's feature space; text families on
# held-out bits per character. Floors: an evaluator below 90% held-out accuracy makes FID
# meaningless; a generator copying more than 5% of its samples from training data is rejected;
# a language model whose bigrams are under 20% distinct is looping, and one with under 10%
# novel word 4-grams is reciting its training text.
POLICIES: dict[str, GatePolicy] = {
    "dcgan": GatePolicy(
        metric="fid",
        lower_is_better=True,
        min_improvement=0.0,
        minimums={"evaluator_accuracy": 0.9},
        maximums={"memorization_rate": 0.05},
    ),
    "vae": GatePolicy(
        metric="neg_elbo",
        lower_is_better=True,
        min_improvement=0.0,
        minimums={"evaluator_accuracy": 0.9},
        maximums={"memorization_rate": 0.05},
    ),
    "charlstm": GatePolicy(
        metric="bits_per_char",
        lower_is_better=True,
        min_improvement=0.0,
        minimums={"distinct_2": 0.2, "novelty": 0.1},
    ),
    "transformer": GatePolicy(
        metric="bits_per_char",
        lower_is_better=True,
        min_improvement=0.0,
        minimums={"distinct_2": 0.2, "novelty": 0.1},
    ),
}


def policy_for(family: str) -> GatePolicy:
    try:
        return POLICIES[family]
    except KeyError:
        raise ValueError(
            f"no promotion policy for model family {family!r}; known: {sorted(POLICIES)}. "
            "Add one to aigc_core.promotion.POLICIES."
        ) from None


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
