"""Evaluation of class-conditional image generators (aigc_core.evaluation.image_eval and
.conditional): per-class FID beside its floor, label accuracy, the per-class sample grid, and
an unconditional generator scored exactly as before."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from aigc_core import progress
from aigc_core.data.snapshot import image_arrays, image_table
from aigc_core.evaluation import conditional, image_eval
from aigc_core.evaluation.evaluator import evaluator_in
from aigc_core.families.base import EvalInputs
from aigc_core.generation.labels import balanced
from tests.conftest import tiny_images

K = 4
UNCONDITIONAL_KEYS = {
    "fid",
    "fid_floor",
    "fid_inf_estimate",
    "precision",
    "recall",
    "class_diversity",
    "memorization_rate",
    "mean_confidence",
    "classes_covered",
    "fid_samples_generated",
    "fid_samples_heldout",
    "fid_samples_train",
    "evaluator_accuracy",
}


class RealImages:
    """A stand-in conditional generator: for each item, a training image of the class asked
    (drawn with replacement, seeded), or of class `label + shift` (a model that mixes classes
    up while keeping them balanced). Records its calls."""

    def __init__(self, x, y, num_classes=K, shift=0):
        self.x, self.y, self.num_classes, self.shift = x, y, num_classes, shift
        self.calls = []

    def generate(self, n, seed, batch_size=256, on_batch=None, labels=None, **options):
        self.calls.append((n, seed, None if labels is None else labels.copy()))
        if self.num_classes and labels is None:
            labels = balanced(n, self.num_classes)
        rng = np.random.default_rng(seed)
        shown = (
            rng.integers(0, K, n)
            if labels is None
            else (np.asarray(labels) + self.shift) % self.num_classes
        )
        out = np.empty((n, *self.x.shape[1:]), np.float32)
        for c in np.unique(shown):
            pool = np.flatnonzero(self.y == c)
            out[shown == c] = self.x[rng.choice(pool, int((shown == c).sum()))]
        for done in range(batch_size, n + batch_size, batch_size):
            if on_batch is not None:
                on_batch(min(done, n), n)
        return out


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A 400-image, 4-class snapshot (~20 held-out images per class) and its trained evaluator,
    shared by the tests of this module."""
    table = image_table(tiny_images(n=400, classes=K))
    evaluators = tmp_path_factory.mktemp("evaluators")
    inputs = EvalInputs(
        model_dir=evaluators / "unused",
        checkpoint_dir=evaluators / "unused",
        snapshot_id="snap",
        table=table,
        manifest={"label_set": list(range(K)), "label_names": ["zero", "one", "two", "three"]},
        evaluators_dir=evaluators,
    )
    evaluator_in(evaluators / "snap", lambda: (table, inputs.manifest))
    return inputs


@pytest.fixture(autouse=True)
def small_sets(monkeypatch):
    monkeypatch.setattr(image_eval, "FID_GENERATED", 400)  # 100 per class
    monkeypatch.setattr(image_eval, "CLASS_GENERATED_MIN", 50)


def test_a_generator_drawing_real_images_of_each_class_scores_near_the_floor(snapshot):
    x, y = image_arrays(snapshot.table, "train")
    gen = RealImages(x, y)
    ev = image_eval.evaluate_images(snapshot, gen)
    m = ev.metrics
    per_class = {f"fid_class_{c}" for c in range(K)} | {f"fid_floor_class_{c}" for c in range(K)}
    extra = {
        "label_accuracy",
        "fid_per_class",
        "fid_per_class_floor",
        "fid_classes_scored",
        "fid_samples_per_class",
    }
    assert set(m) == UNCONDITIONAL_KEYS | per_class | extra
    assert all(math.isfinite(v) for v in m.values())
    # the main set asks for the classes in turn; the FID set alone gives each class its 100
    assert len(gen.calls) == 1
    n, seed, labels = gen.calls[0]
    assert (n, seed) == (400, image_eval.FID_SEED)
    assert np.array_equal(labels, balanced(400, K))
    assert m["fid_samples_per_class"] == 100 and m["fid_classes_scored"] == K
    assert m["label_accuracy"] >= 0.95
    # training images of class c against held-out images of class c: the floor's own setting
    # (~20 held-out images: a singular covariance in 64 feature dimensions, still finite)
    for c in range(K):
        fc, floor = m[f"fid_class_{c}"], m[f"fid_floor_class_{c}"]
        assert 0 <= fc < 1.5 * floor + 0.5, (c, fc, floor)
    assert m["fid_per_class"] == pytest.approx(np.mean([m[f"fid_class_{c}"] for c in range(K)]))
    assert m["fid_per_class_floor"] == pytest.approx(
        np.mean([m[f"fid_floor_class_{c}"] for c in range(K)])
    )
    assert "label accuracy" in ev.summary and "per-class FID" in ev.summary
    # samples.png: one row of 8 per class, a caption under each row's first image
    sheet = ev.images["samples.png"]
    cell = 28 * 3 + 2 * 2
    assert sheet.size == (8 * cell, K * (cell + 12))


def test_mixed_up_classes_keep_the_overall_fid_and_fail_per_class(snapshot):
    x, y = image_arrays(snapshot.table, "train")
    right = image_eval.evaluate_images(snapshot, RealImages(x, y)).metrics
    wrong = image_eval.evaluate_images(snapshot, RealImages(x, y, shift=1)).metrics
    # the same balanced mix of real images: the overall FID cannot tell them apart
    assert wrong["fid"] == pytest.approx(right["fid"], rel=0.5, abs=0.5)
    assert wrong["label_accuracy"] <= 0.05
    assert wrong["fid_per_class"] > 5 * right["fid_per_class"] + 1


def test_an_unconditional_generator_is_scored_as_before(snapshot):
    x, y = image_arrays(snapshot.table, "train")
    x_va, _ = image_arrays(snapshot.table, "validation")
    gen = RealImages(x, y, num_classes=0)
    ev = image_eval.evaluate_images(snapshot, gen)
    assert set(ev.metrics) == UNCONDITIONAL_KEYS
    assert gen.calls[0][2] is None  # no labels asked
    evaluator, ev_metrics = evaluator_in(
        snapshot.evaluators_dir / "snap", lambda: pytest.fail("trained again")
    )
    fake = gen.generate(400, seed=image_eval.FID_SEED)
    expected = {
        **image_eval.image_metrics(evaluator, fake, x, x_va),
        "evaluator_accuracy": ev_metrics["accuracy"],
    }
    assert ev.metrics == expected
    assert "label accuracy" not in ev.summary
    assert ev.images["samples.png"].size == (8 * 88, 8 * 88)  # the first 64, 8 a row

    class NoNumClasses:  # a plugin's generator that does not say: unconditional
        def generate(self, n, seed, batch_size=256, on_batch=None):
            return gen.generate(n, seed)

    assert image_eval.evaluate_images(snapshot, NoNumClasses()).metrics == expected


def test_many_classes_get_extra_images_up_to_the_minimum(snapshot, monkeypatch):
    monkeypatch.setattr(image_eval, "CLASS_GENERATED_MIN", 150)  # the FID set gives 100 each
    x, y = image_arrays(snapshot.table, "train")
    gen = RealImages(x, y)
    reports = []
    progress.set_reporter(lambda stage, done, total: reports.append((stage, done, total)))
    try:
        m = image_eval.evaluate_images(snapshot, gen).metrics
    finally:
        progress.set_reporter(None)
    assert [(n, s) for n, s, _ in gen.calls] == [(400, 2024), (200, 2025)]
    assert np.array_equal(gen.calls[1][2], balanced(200, K))
    assert m["fid_samples_per_class"] == 150 and m["fid_samples_generated"] == 400
    # progress runs 0..100 in order, through the generation of both sets
    done = [d for stage, d, total in reports if stage == "evaluate" and total == 100]
    assert done[0] == 0 and done[-1] == 100 and done == sorted(done)
    assert any(10 < d < 80 for d in done)


def test_a_class_with_too_few_held_out_images_is_not_scored(snapshot, caplog):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 8))
    labels = np.arange(400) % 3
    y_va = np.array([0] * 30 + [1] * 30 + [2] * 4)  # class 2: 4 held-out images
    with caplog.at_level(logging.WARNING):
        out = conditional.per_class_fid(
            f, labels, rng.normal(size=(90, 8)), np.arange(90) % 3, f[:64], y_va, 3
        )
    assert "fid_class_2" not in out and out["fid_classes_scored"] == 2
    assert out["fid_per_class"] == pytest.approx((out["fid_class_0"] + out["fid_class_1"]) / 2)
    assert "classes [2]" in caplog.text


def test_fewer_held_out_images_than_feature_dimensions_give_a_finite_floor_like_fid():
    # 20 reference points in 64 dimensions: singular covariance; a same-distribution set scores
    # close to the floor, a shifted one far above it
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(64, 64)) / 8
    ref, train, same = (rng.normal(size=(n, 64)) @ mix for n in (20, 80, 400))
    labels0 = np.zeros(400, dtype=np.int64)
    out = conditional.per_class_fid(
        same, labels0, train, np.zeros(80, np.int64), ref, np.zeros(20, np.int64), 1
    )
    assert math.isfinite(out["fid_class_0"]) and math.isfinite(out["fid_floor_class_0"])
    assert out["fid_class_0"] == pytest.approx(out["fid_floor_class_0"], rel=0.3)
    shifted = conditional.per_class_fid(
        same + 1.0, labels0, train, np.zeros(80, np.int64), ref, np.zeros(20, np.int64), 1
    )
    assert shifted["fid_class_0"] > out["fid_class_0"] + 30


def test_a_generator_with_another_label_set_is_refused(snapshot):
    x, y = image_arrays(snapshot.table, "train")
    with pytest.raises(ValueError, match="knows 7 classes but snapshot snap has 4"):
        image_eval.evaluate_images(snapshot, RealImages(x, y, num_classes=7))


def test_label_accuracy_and_class_indices():
    probs = np.eye(3)[[0, 1, 2, 0]]
    assert conditional.label_accuracy(probs, np.array([0, 1, 1, 0])) == 0.75
    idx = conditional.class_indices(np.arange(10) % 3, 3, per_class=3)
    assert [i.tolist() for i in idx] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError, match="class 0: 1 generated images, need 2"):
        conditional.class_indices(np.array([0, 1, 1]), 2, per_class=2)
