"""The registry through the tracker against a real MLflow SQLite store per test: register with
lineage, the compare-and-set promotion gate, concurrent promotions, rollback, the audit log."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from aigc_core import families
from aigc_core.models.dcgan import DCGANConfig, Generator
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.promotion import RegistryError, gate_tags, read_audit
from aigc_core.stages import Scores, SnapshotRef, TrainedRun
from tasks.registry import list_models, promote_version, register, rollback
from tasks.tracking import Tracker

NAME = "aigc-dcgan-digits"
GOOD = {"evaluator_accuracy": 0.97, "memorization_rate": 0.0, "fid_floor": 1.0}


@pytest.fixture
def store(home):
    """A home whose MLflow store holds one tiny generator's run, and that run as trained."""
    tracker = Tracker(home)
    torch.manual_seed(0)
    cfg = DCGANConfig(z_dim=8, g_width=4, d_width=4)
    run_id = tracker.start_run("test", tags={"flow_run_id": "flow-123"})
    model_dir = home.runs / run_id / "model"
    save_model(model_dir, Generator(cfg), cfg.to_dict())
    trained = TrainedRun(
        run_id=run_id,
        snapshot=SnapshotRef("snap-abc", "digits", "image", str(home.datasets), 10, False),
        family="dcgan",
        model_name=NAME,
        model_dir=str(model_dir),
        checkpoint_dir=str(home.runs / run_id / "checkpoints"),
        preset="test",
        device="cpu",
        steps=1,
        resumed_from_step=0,
    )
    return home, trained


@pytest.fixture
def logged(store):
    """`store` with the generator logged once as a pyfunc model: (home, {"uri": its URI})."""
    home, trained = store
    model_dir = Path(trained.model_dir)
    weights, config = model_dir / WEIGHTS, model_dir / CONFIG
    example = pd.DataFrame({"n": [2], "seed": [0]})
    out = families.get("dcgan").load_generator(weights, config).predict(example)
    uri = Tracker(home).log_model(
        trained.run_id, {"weights": weights, "config": config}, example, out
    )
    return home, {"run_id": trained.run_id, "uri": uri}


def add_version(home, trained, fid: float, **extra) -> str:
    """Register another version of the logged model, with its own gate metrics."""
    policy = families.get("dcgan").policy
    tags = {"family": "dcgan", **gate_tags({"fid": fid, **GOOD, **extra}, policy)}
    return Tracker(home).register(trained["uri"], NAME, tags)


def test_register_logs_a_pyfunc_with_lineage_and_gate_tags(store):
    home, trained = store
    scores = Scores(trained.run_id, {"fid": 12.5, **GOOD})
    warm = replace(trained, parent_version="7", parent_model_uri="models:/x@champion")
    out = register.fn(warm, scores, str(home.root))
    assert out.version == "1" and out.model_name == NAME and out.run_id == trained.run_id
    tracker = Tracker(home)
    v = tracker.get_version(NAME, "1")
    assert v.tags["aigc.snapshot_id"] == "snap-abc" and v.tags["aigc.run_id"] == trained.run_id
    assert v.tags["aigc.flow_run_id"] == "flow-123" and v.tags["aigc.git_revision"]
    assert v.tags["aigc.family"] == "dcgan" and v.tags["aigc.preset"] == "test"
    assert v.tags["aigc.parent_version"] == "7"  # warm start lineage
    assert float(v.tags["gate.fid"]) == 12.5
    assert float(v.tags["gate.memorization_rate"]) == 0.0
    assert tracker.alias_version(NAME, "challenger").version == "1"
    assert tracker.resolve(f"{NAME}@challenger") == v and tracker.resolve(f"{NAME}/1") == v
    with pytest.raises(LookupError, match="has no 'champion' alias"):
        tracker.resolve(NAME)
    model = tracker.load_model(f"models:/{NAME}/1")  # as MLflow serves it: no unpickling
    assert model.generator.generate(3, seed=1).shape == (3, 1, 28, 28)
    files = tracker.download_model(f"models:/{NAME}/1", home.root / "download")
    generator = families.get("dcgan").load_generator(files / WEIGHTS, files / CONFIG)
    assert (generator.generate(3, seed=1) == model.generator.generate(3, seed=1)).all()


def test_a_worse_version_is_rejected_with_its_reason_and_a_better_one_wins(logged):
    home, trained = logged
    v1, v2, v3 = (add_version(home, trained, f) for f in (20.0, 35.0, 9.0))
    first = promote_version(home, NAME, v1, actor="test")
    assert first.promoted and first.previous_champion is None
    worse = promote_version(home, NAME, v2, actor="test")
    assert not worse.promoted and worse.champion_version == v1
    assert "does not beat champion v1" in worse.reason
    tags = Tracker(home).get_version(NAME, v2).tags
    assert tags["promotion.decision"] == "rejected"
    assert tags["promotion.reason"] == worse.reason
    assert tags["promotion.previous_champion"] == v1
    better = promote_version(home, NAME, v3, actor="test")
    assert better.promoted and better.previous_champion == v1
    assert Tracker(home).alias_version(NAME, "champion").version == v3
    audit = read_audit(home, NAME)
    assert [(r["version"], r["decision"]) for r in audit] == [
        (v1, "promoted"),
        (v2, "rejected"),
        (v3, "promoted"),
    ]
    assert audit[1]["reason"] == worse.reason
    assert audit[2]["champion_metrics"]["fid"] == 20.0


def test_floors_stop_a_memorizing_model_even_with_a_better_fid(logged):
    home, trained = logged
    promote_version(home, NAME, add_version(home, trained, 20.0))
    copier = add_version(home, trained, 1.0, memorization_rate=0.3)
    d = promote_version(home, NAME, copier)
    assert not d.promoted and "memorization_rate 0.3 above ceiling" in d.reason


def test_eight_threads_promoting_at_once_leave_one_consistent_champion(logged):
    home, trained = logged
    fids = [30.0, 12.0, 25.0, 8.0, 40.0, 15.0, 9.5, 22.0]
    versions = [add_version(home, trained, f) for f in fids]
    results, errors = {}, []
    barrier = threading.Barrier(len(versions))

    def worker(v):
        try:
            barrier.wait()
            results[v] = promote_version(home, NAME, v, actor=f"thread-{v}")
        except BaseException as e:  # noqa: BLE001 - the test asserts none escaped
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(results) == len(versions)
    best = versions[fids.index(min(fids))]
    assert Tracker(home).alias_version(NAME, "champion").version == best
    audit = read_audit(home, NAME)
    assert sorted(r["version"] for r in audit) == sorted(versions)  # every decision recorded
    # serialized: decisions form one chain, each seeing the champion the previous one left
    champion = None
    for r in audit:
        assert r["previous_champion"] == champion, audit
        champion = r["champion_after"]
    promoted = [r for r in audit if r["decision"] == "promoted"]
    assert sum(r["previous_champion"] is None for r in audit) == 1  # only one saw no champion
    fid_of = dict(zip(versions, fids, strict=True))
    chain = [fid_of[r["version"]] for r in promoted]
    assert chain == sorted(chain, reverse=True)  # every promotion strictly improved the FID


def test_rollback_restores_the_previous_champion_and_records_it(logged):
    home, trained = logged
    v1, v2, v3 = (add_version(home, trained, f) for f in (20.0, 10.0, 5.0))
    for v in (v1, v2, v3):
        assert promote_version(home, NAME, v).promoted
    out = rollback(home, NAME, reason="v3 draws smudges", actor="test")
    assert out == {"model_name": NAME, "champion_version": v2, "previous_champion": v3}
    assert Tracker(home).alias_version(NAME, "champion").version == v2
    assert Tracker(home).get_version(NAME, v3).tags["rollback.reason"] == "v3 draws smudges"
    assert Tracker(home).get_version(NAME, v2).tags["rollback.replaced"] == v3
    last = read_audit(home, NAME)[-1]
    assert last["action"] == "rollback" and last["version"] == v2
    assert last["previous_champion"] == v3 and last["reason"] == "v3 draws smudges"
    assert rollback(home, NAME)["champion_version"] == v1  # walks back through history
    with pytest.raises(RegistryError, match="records no previous champion"):
        rollback(home, NAME)
    assert Tracker(home).alias_version(NAME, "champion").version == v1


def test_forced_promotion_needs_a_reason_and_is_recorded(logged):
    home, trained = logged
    v1, v2 = add_version(home, trained, 5.0), add_version(home, trained, 50.0)
    promote_version(home, NAME, v1)
    with pytest.raises(ValueError, match="needs a reason"):
        promote_version(home, NAME, v2, force=True)
    d = promote_version(home, NAME, v2, force=True, reason="hotfix", actor="alice")
    assert d.promoted and d.reason == "forced by alice: hotfix"
    assert Tracker(home).get_version(NAME, v2).tags["promotion.forced"] == "true"
    again = promote_version(home, NAME, v2)
    assert not again.promoted and again.decision == "unchanged"
    with pytest.raises(RegistryError, match="has no version '99'"):
        promote_version(home, NAME, "99")


def test_list_models_shows_versions_aliases_and_decisions(logged):
    home, trained = logged
    v1, v2 = add_version(home, trained, 5.0), add_version(home, trained, 50.0)
    promote_version(home, NAME, v1)
    promote_version(home, NAME, v2)
    [model] = list_models(home)
    assert model["name"] == NAME and model["aliases"] == {"champion": v1}
    by_version = {v["version"]: v for v in model["versions"]}
    assert by_version[v1]["aliases"] == ["champion"]
    assert by_version[v2]["tags"]["promotion.decision"] == "rejected"
