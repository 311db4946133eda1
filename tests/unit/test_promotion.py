import math
from dataclasses import replace

import pytest

from aigc_core import families
from aigc_core.paths import Home
from aigc_core.promotion import (
    CHAMPION,
    GatePolicy,
    RegistryError,
    decide,
    gate_metrics_of,
    gate_tags,
    promote_version,
    read_audit,
    rollback,
)
from aigc_core.stages import ModelVersion

FID = GatePolicy(metric="fid", lower_is_better=True)


def test_first_version_is_promoted():
    d = decide({"fid": 40.0}, None, FID)
    assert d.promote and "no champion" in d.reason


def test_better_candidate_is_promoted_and_worse_is_not():
    assert decide({"fid": 10.0}, {"fid": 20.0}, FID, "3").promote
    worse = decide({"fid": 30.0}, {"fid": 20.0}, FID, "3")
    assert not worse.promote
    assert "does not beat champion v3" in worse.reason


def test_a_tie_or_a_win_below_the_margin_is_not_a_promotion():
    assert not decide({"fid": 20.0}, {"fid": 20.0}, FID).promote
    margin = GatePolicy(metric="fid", min_improvement=5.0)
    assert not decide({"fid": 17.0}, {"fid": 20.0}, margin).promote
    assert decide({"fid": 14.0}, {"fid": 20.0}, margin).promote


def test_higher_is_better_metrics():
    acc = GatePolicy(metric="accuracy", lower_is_better=False)
    assert decide({"accuracy": 0.9}, {"accuracy": 0.8}, acc).promote
    assert not decide({"accuracy": 0.7}, {"accuracy": 0.8}, acc).promote


def test_non_finite_candidate_is_never_promoted():
    for bad in (math.nan, math.inf):
        d = decide({"fid": bad}, None, FID)
        assert not d.promote and "no finite fid" in d.reason
    assert not decide({}, None, FID).promote


def test_champion_without_the_metric_is_replaced():
    d = decide({"fid": 50.0}, {}, FID, "1")
    assert d.promote and "champion v1 has no finite fid" in d.reason


def test_hard_floors_reject_a_better_candidate_and_name_the_floor():
    policy = GatePolicy(
        metric="fid", minimums={"evaluator_accuracy": 0.9}, maximums={"memorization_rate": 0.05}
    )
    good = {"fid": 5.0, "evaluator_accuracy": 0.95, "memorization_rate": 0.0}
    assert decide(good, {"fid": 20.0}, policy, "2").promote
    copier = {**good, "memorization_rate": 0.2}
    d = decide(copier, {"fid": 20.0}, policy, "2")
    assert not d.promote and "memorization_rate 0.2 above ceiling 0.05" in d.reason
    blind = {**good, "evaluator_accuracy": 0.5}
    d = decide(blind, None, policy)  # floors hold even with no champion
    assert not d.promote and "evaluator_accuracy 0.5 below floor 0.9" in d.reason
    d = decide({"fid": 5.0, "evaluator_accuracy": 0.95}, None, policy)
    assert not d.promote and "memorization_rate missing" in d.reason


def test_every_family_has_a_policy_whose_gate_metrics_include_its_primary():
    policies = {name: f.policy for name, f in families.available().items()}
    assert set(policies) >= {"dcgan", "vae", "charlstm", "transformer"}
    for policy in policies.values():
        assert policy.gate_metrics[0] == policy.metric
    assert policies["dcgan"].gate_metrics == ["fid", "evaluator_accuracy", "memorization_rate"]
    assert policies["charlstm"].metric == "bits_per_char" and policies["charlstm"].lower_is_better


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model family 'gpt9'"):
        families.get("gpt9")


class MemoryRegistry:
    """A registry in a dict: what `promote_version` and `rollback` need of one."""

    def __init__(self):
        self.versions: dict[str, ModelVersion] = {}
        self.aliases: dict[str, str] = {}

    def add(self, fid: float, family: str = "dcgan", **extra) -> str:
        v = str(len(self.versions) + 1)
        metrics = {"fid": fid, "evaluator_accuracy": 0.97, "memorization_rate": 0.0, **extra}
        tags = {"family": family, **gate_tags(metrics, families.get(family).policy)}
        self.versions[v] = ModelVersion("m", v, f"run-{v}", tags)
        return v

    def alias_version(self, name, alias):
        v = self.aliases.get(alias)
        return self.versions[v] if v else None

    def get_version(self, name, version):
        return self.versions.get(str(version))

    def set_alias(self, name, alias, version):
        self.aliases[alias] = version

    def tag_version(self, name, version, tags):
        mv = self.versions[version]
        self.versions[version] = replace(mv, tags={**mv.tags, **tags})


def test_promote_version_gates_by_the_family_tag_and_records_every_decision(tmp_path):
    home, reg = Home(tmp_path), MemoryRegistry()
    v1, v2, v3 = reg.add(20.0), reg.add(35.0), reg.add(9.0, memorization_rate=0.3)
    first = promote_version(reg, home, "m", v1, actor="test")
    assert first.promoted and first.decision == "promoted" and first.previous_champion is None
    worse = promote_version(reg, home, "m", v2)
    assert not worse.promoted and worse.champion_version == v1
    assert "does not beat champion v1" in worse.reason
    assert reg.versions[v2].tags["promotion.reason"] == worse.reason
    copier = promote_version(reg, home, "m", v3)  # the dcgan policy's ceiling, from the tag
    assert not copier.promoted and "memorization_rate 0.3 above ceiling" in copier.reason
    assert reg.aliases[CHAMPION] == v1
    assert promote_version(reg, home, "m", v1).decision == "unchanged"
    audit = read_audit(home, "m")
    assert [(r["version"], r["decision"]) for r in audit] == [
        (v1, "promoted"), (v2, "rejected"), (v3, "rejected"), (v1, "unchanged"),
    ]  # fmt: skip
    assert audit[1]["champion_metrics"]["fid"] == 20.0
    assert gate_metrics_of(reg.versions[v1].tags)["fid"] == 20.0


def test_rollback_walks_back_and_says_when_it_cannot(tmp_path):
    home, reg = Home(tmp_path), MemoryRegistry()
    v1, v2 = reg.add(20.0), reg.add(10.0)
    with pytest.raises(RegistryError, match="has no champion to roll back"):
        rollback(reg, home, "m")
    for v in (v1, v2):
        assert promote_version(reg, home, "m", v).promoted
    out = rollback(reg, home, "m", reason="smudges", actor="test")
    assert out == {"model_name": "m", "champion_version": v1, "previous_champion": v2}
    assert reg.versions[v2].tags["rollback.reason"] == "smudges"
    with pytest.raises(RegistryError, match="records no previous champion"):
        rollback(reg, home, "m")
    with pytest.raises(RegistryError, match="has no version '9'"):
        promote_version(reg, home, "m", "9")
    with pytest.raises(ValueError, match="needs a reason"):
        promote_version(reg, home, "m", v2, force=True)
