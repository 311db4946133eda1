import math

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_core import families
from aigc_core.data.snapshot import image_arrays, image_table, text_table
from aigc_core.evaluation import image_eval
from aigc_core.evaluation.classifier import ClassifierConfig, train_classifier
from aigc_core.evaluation.evaluator import evaluator_in
from aigc_core.evaluation.fid import fid
from aigc_core.evaluation.text_eval import text_metrics
from aigc_core.families.base import EvalInputs, TrainData
from aigc_core.generation.text import TextGenerator
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab
from aigc_core.models.io import save_model
from aigc_core.training import engine
from tests.conftest import tiny_images


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(500, 8))
    assert fid(f, f) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_a_mean_shift_is_the_squared_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    b = a + np.array([3.0, 0, 0, 0])  # same covariance, mean moved by 3
    assert fid(a, b) == pytest.approx(9.0, rel=1e-6)


def test_fid_grows_with_distance():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(1000, 4)), rng.normal(size=(1000, 4))
    assert fid(a, b) < fid(a, b + 1.0) < fid(a, b * 3 + 1.0)


def test_fid_needs_two_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        fid(np.zeros((1, 3)), np.zeros((5, 3)))


def test_classifier_learns_a_separable_task():
    data = tiny_images(n=200, classes=4)  # bars 6 rows apart: the +-2 pixel shifts keep them apart
    x, y = torch.from_numpy(data.pixels), torch.from_numpy(data.labels)
    cfg = ClassifierConfig(num_classes=4, width=8, feature_dim=16)
    model, acc = train_classifier(x[:160], y[:160], x[160:], y[160:], cfg, epochs=20)
    assert acc >= 0.9
    feats, probs = model.embed(x[:10])
    assert feats.shape == (10, 16) and probs.shape == (10, 4)
    assert np.allclose(probs.sum(1), 1.0)


def test_classifier_refuses_labels_out_of_range():
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match="labels must lie in"):
        train_classifier(
            x,
            torch.tensor([0, 1, 2, 12]),
            x,
            torch.tensor([0, 1, 2, 3]),
            ClassifierConfig(width=4, feature_dim=8),
            epochs=1,
        )


# --- the families' evaluate functions (aigc_core.evaluation.image_eval / text_eval) ----------

TRAIN = "the cat sat on the mat. the dog sat on the log. " * 20
VAL = "the cat sat on the log. the dog sat on the mat. " * 8


def test_text_metrics_of_an_untrained_charlstm():
    torch.manual_seed(0)
    cfg = CharLSTMConfig(
        vocab=build_vocab(TRAIN + VAL), embed_dim=8, hidden=16, layers=1, block_size=16
    )
    m, samples = text_metrics(TextGenerator(CharLSTM(cfg)), TRAIN, VAL)
    # an untrained model is close to uniform over the vocabulary
    assert m["heldout_nats"] == pytest.approx(math.log(cfg.vocab_size), rel=0.1)
    assert m["bits_per_char"] == pytest.approx(m["heldout_nats"] / math.log(2))
    assert m["perplexity"] == pytest.approx(math.exp(m["heldout_nats"]))
    assert 0 < m["distinct_1"] <= 1 and 0 < m["distinct_2"] <= 1
    assert m["novelty"] > 0.9  # random characters make words the training text never had
    assert m["text_samples"] == 32 and m["heldout_chars"] == len(VAL)
    # the samples themselves, for the run's table: each continues its held-out prompt
    assert len(samples) == 32 and set(samples[0]) == {"prompt", "text", "finish_reason"}
    assert all(r["prompt"] and r["prompt"] in VAL and r["text"] for r in samples)


def _inputs(tmp_path, table, final=None) -> EvalInputs:
    return EvalInputs(
        model_dir=tmp_path / "model",
        checkpoint_dir=tmp_path / "ckpt",
        snapshot_id="snap",
        table=table,
        manifest={"label_set": [str(i) for i in range(4)]},
        evaluators_dir=tmp_path / "evaluators",
        final=final or {},
    )


def test_a_text_family_evaluates_its_saved_model(tmp_path):
    docs = [f"the cat sat on the mat number {i}. the dog sat on the log." for i in range(60)]
    table = text_table(docs)
    family = families.get("charlstm")
    cfg = CharLSTMConfig(vocab=build_vocab("\n".join(docs)), embed_dim=8, hidden=16)
    save_model(tmp_path / "model", CharLSTM(cfg), cfg.to_dict())
    ev = family.evaluate(_inputs(tmp_path, table))
    assert set(family.policy.gate_metrics) <= set(ev.metrics)
    assert ev.metrics["heldout_chars"] > 0 and ev.images == {}
    assert ev.summary.startswith("held-out ") and "bits/char" in ev.summary


@pytest.fixture
def image_snapshot(tmp_path, monkeypatch):
    """A tiny image snapshot's table and a trained VAE run (checkpoint + served decoder); FID on
    300 generated images instead of 5000."""
    monkeypatch.setattr(image_eval, "FID_GENERATED", 300)
    table = image_table(tiny_images(n=200, classes=4))
    x, _ = image_arrays(table, "train")
    pics = torch.from_numpy(x)
    r = engine.train_model(
        families.get("vae"),
        "smoke",
        TrainData(images=pics, val_images=pics[:32]),
        torch.device("cpu"),
        tmp_path / "ckpt",
        overrides={"steps": 2, "bf16": False},
    )
    save_model(tmp_path / "model", *r.served_module())
    return table


def test_image_families_score_fid_against_the_snapshot_and_vae_adds_its_own(
    tmp_path, image_snapshot
):
    vae = families.get("vae")
    with pytest.raises(ValueError, match="has no final_val_neg_elbo; the snapshot needs"):
        vae.evaluate(_inputs(tmp_path, image_snapshot))
    ev = vae.evaluate(_inputs(tmp_path, image_snapshot, {"final_val_neg_elbo": 123.5}))
    assert set(vae.policy.gate_metrics) <= set(ev.metrics) and ev.metrics["neg_elbo"] == 123.5
    for key in ("fid", "fid_floor", "fid_inf_estimate", "precision", "recall", "class_diversity"):
        assert math.isfinite(ev.metrics[key]), key
    assert ev.metrics["fid_samples_generated"] == 300
    assert 0 <= ev.metrics["evaluator_accuracy"] <= 1
    assert list(ev.images) == ["reconstructions.png", "samples.png"]
    assert all(isinstance(img, Image.Image) for img in ev.images.values())
    assert ev.summary.startswith("FID ") and "neg_elbo 123.500" in ev.summary
    # the evaluator is trained once per snapshot and reused
    stored = tmp_path / "evaluators" / "snap"
    assert (stored / "metrics.json").exists()
    _, metrics = evaluator_in(stored, lambda: pytest.fail("the evaluator was trained again"))
    assert metrics["accuracy"] == ev.metrics["evaluator_accuracy"]
