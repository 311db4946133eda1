"""The promotion gate's decision, as a pure function of metrics and a policy.

The registry adapter reads the current champion's metrics, calls `decide`, and records the
returned reason on the candidate version whatever the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GatePolicy:
    metric: str = "fid"
    lower_is_better: bool = True
    min_improvement: float = 0.0  # absolute margin the candidate must win by


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    policy: GatePolicy,
    champion_version: str | None = None,
) -> Decision:
    m = policy.metric
    cand = candidate.get(m)
    if cand is None or not math.isfinite(cand):
        return Decision(False, f"candidate has no finite {m} ({cand!r})")
    if champion is None:
        return Decision(True, f"no champion yet; candidate {m}={cand:.4g}")
    champ = champion.get(m)
    who = f"champion v{champion_version}" if champion_version else "champion"
    if champ is None or not math.isfinite(champ):
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
