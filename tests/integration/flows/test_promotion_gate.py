"""The promotion gate on real models: train, evaluate, register and promote as the nightly flow
does, with a deliberately worse model (one training step) and a better one (300 steps), then a
warm start from the champion."""

from __future__ import annotations

from dataclasses import asdict

import mlflow
import pytest
from prefect import flow

from aigc_core.evaluation import image_eval
from aigc_core.paths import Home
from aigc_core.promotion import read_audit
from tasks.data import ingest, validate
from tasks.evaluation import evaluate
from tasks.registry import promote, register
from tasks.training import train

pytestmark = pytest.mark.slow

ONE_STEP = {"epochs": 1, "steps_per_epoch": 1}
BETTER = {"epochs": 2, "steps_per_epoch": 60}
GENERATED = 2000  # FID samples in these tests (the task's default is 5000): 2 shared CPU cores


@flow(name="promotion-gate-test")
def train_and_gate(home: str, overrides: dict, init_from: str | None = None) -> dict:
    snapshot = validate(ingest("digits", home), home)
    trained = train(snapshot, "smoke", home, config={"train": overrides}, init_from=init_from)
    scores = evaluate(trained, home)
    registered = register(trained, scores, home)
    decision = promote(registered, scores, "dcgan", home)
    return {**asdict(registered), **asdict(decision), "metrics": dict(scores.metrics)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("gate"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image_eval, "FID_GENERATED", GENERATED)
        first = train_and_gate(home, ONE_STEP)
        better = train_and_gate(home, BETTER)
        worse = train_and_gate(home, ONE_STEP)
    return home, first, better, worse


def client_for(home) -> mlflow.MlflowClient:
    uri = f"sqlite:///{home}/mlflow.db"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_better_model_replaces_a_one_step_champion(runs):
    _, first, better, _ = runs
    assert first["promoted"] and first["reason"].startswith("no champion yet")
    assert better["metrics"]["fid"] < first["metrics"]["fid"]
    assert better["promoted"] and better["previous_champion"] == first["version"]
    assert f"beats champion v{first['version']}" in better["reason"]


def test_a_one_step_model_is_not_promoted_and_the_reason_is_recorded(runs):
    home, _, better, worse = runs
    assert not worse["promoted"] and worse["champion_version"] == better["version"]
    assert f"does not beat champion v{better['version']}" in worse["reason"]
    v = client_for(home).get_model_version(worse["model_name"], worse["version"])
    assert v.tags["promotion.decision"] == "rejected"
    assert v.tags["promotion.reason"] == worse["reason"]
    assert float(v.tags["gate.fid"]) == pytest.approx(worse["metrics"]["fid"])
    audit = read_audit(Home.resolve(home), worse["model_name"])
    assert [(r["version"], r["decision"]) for r in audit[:3]] == [
        ("1", "promoted"),
        ("2", "promoted"),
        ("3", "rejected"),
    ]
    assert audit[2]["reason"] == worse["reason"]


def test_evaluation_logs_every_metric_with_its_sample_sizes_and_the_loss_curves(runs):
    home, _, better, _ = runs
    m = better["metrics"]
    for key in ("fid", "fid_floor", "precision", "recall", "class_diversity", "memorization_rate"):
        assert key in m
    assert m["fid_floor"] < m["fid"]
    assert m["fid_samples_generated"] == GENERATED and m["fid_samples_heldout"] > 100
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert 1 <= m["class_diversity"] <= 10
    assert m["memorization_rate"] <= 0.05
    artifacts = {a.path for a in client_for(home).list_artifacts(better["run_id"])}
    assert {"loss_curves.png", "samples.png"} <= artifacts


def test_a_warm_start_from_the_champion_names_its_parent_version(runs, monkeypatch):
    home, _, better, _ = runs
    monkeypatch.setattr(image_eval, "FID_GENERATED", GENERATED)
    warm = train_and_gate(home, ONE_STEP, init_from=f"models:/{better['model_name']}@champion")
    v = client_for(home).get_model_version(warm["model_name"], warm["version"])
    assert v.tags["aigc.parent_version"] == better["version"]
    assert v.tags["aigc.parent_model_uri"].endswith("@champion")
