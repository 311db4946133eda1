import math

import pytest

from aigc_core.promotion import POLICIES, GatePolicy, decide, policy_for

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
    assert set(POLICIES) >= {"dcgan", "vae", "charlstm", "transformer"}
    for family, policy in POLICIES.items():
        assert policy_for(family).gate_metrics[0] == policy.metric
    assert POLICIES["dcgan"].gate_metrics == ["fid", "evaluator_accuracy", "memorization_rate"]
    assert POLICIES["charlstm"].metric == "bits_per_char" and POLICIES["charlstm"].lower_is_better


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="no promotion policy for model family 'gpt9'"):
        policy_for("gpt9")
