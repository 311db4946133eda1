import math

from aigc_core.promotion import GatePolicy, decide

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
