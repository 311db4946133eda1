"""The evaluate task's building blocks on tiny models: text metrics through the serving class,
held-out nats of a model that knows the text, and loss-curve PNGs on a real MLflow run."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from aigc_core.evaluation.text import heldout_nats
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab, encode
from aigc_core.models.io import save_model
from tasks import mlflow_adapter as tracking
from tasks.evaluation import text_metrics

TRAIN = "the cat sat on the mat. the dog sat on the log. " * 20
VAL = "the cat sat on the log. the dog sat on the mat. " * 8


class Oracle(torch.nn.Module):
    """Predicts the next character of a periodic text with probability p."""

    def __init__(self, period_ids: torch.Tensor, vocab_size: int, p: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # gives the module a device
        self.period, self.v, self.p = period_ids, vocab_size, p

    def forward(self, idx):
        b, t = idx.shape
        logp = torch.full((b, t, self.v), math.log((1 - self.p) / (self.v - 1)))
        nxt = self.period[(torch.arange(t) + 1) % len(self.period)]  # windows start at a period
        logp[:, torch.arange(t), nxt] = math.log(self.p)
        return (logp,)


def test_heldout_nats_of_a_model_that_knows_the_text_is_its_entropy():
    text = "abcd" * 50
    vocab = build_vocab(text)
    ids = encode(text, vocab)
    p = 0.9
    nats = heldout_nats(Oracle(ids[:4], len(vocab), p), ids, block_size=8)
    assert nats == pytest.approx(-math.log(p), rel=1e-5)
    with pytest.raises(ValueError, match="need more than block_size"):
        heldout_nats(Oracle(ids[:4], len(vocab), p), ids[:5], block_size=8)


def test_text_metrics_of_an_untrained_charlstm(tmp_path):
    torch.manual_seed(0)
    cfg = CharLSTMConfig(
        vocab=build_vocab(TRAIN + VAL), embed_dim=8, hidden=16, layers=1, block_size=16
    )
    save_model(tmp_path, CharLSTM(cfg), cfg.to_dict())
    m = text_metrics(tmp_path, TRAIN, VAL)
    # an untrained model is close to uniform over the vocabulary
    assert m["heldout_nats"] == pytest.approx(math.log(cfg.vocab_size), rel=0.1)
    assert m["bits_per_char"] == pytest.approx(m["heldout_nats"] / math.log(2))
    assert m["perplexity"] == pytest.approx(math.exp(m["heldout_nats"]))
    assert 0 < m["distinct_1"] <= 1 and 0 < m["distinct_2"] <= 1
    assert m["novelty"] > 0.9  # random characters make words the training text never had
    assert m["text_samples"] == 32 and m["heldout_chars"] == len(VAL)


def test_loss_curves_are_plotted_from_the_runs_metric_history(home):
    tracking.configure(home)
    run_id = tracking.start_run("curves", tags={})
    for step, (g, d) in enumerate([(3.0, 1.0), (2.0, 0.8), (1.5, 0.7)]):
        tracking.log_metrics(run_id, {"loss_g": g, "loss_d": d, "lr": 0.1}, step=step)
    assert tracking.log_loss_curves(run_id) == ["loss_d", "loss_g"]
    path = tracking.client().download_artifacts(run_id, "loss_curves.png", str(home.root))
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 350)
    empty = tracking.start_run("no-losses", tags={})
    assert tracking.log_loss_curves(empty) == []
