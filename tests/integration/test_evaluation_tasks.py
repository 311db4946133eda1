"""The evaluate stage on tiny models: text metrics through the family's generator, held-out nats
of a model that knows the text, loss-curve PNGs from a real MLflow run's history, and the task
itself logging a family's scores on the training run."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch
from PIL import Image

from aigc_core import families, plots
from aigc_core.data.snapshot import text_table, write_snapshot
from aigc_core.evaluation.text import heldout_nats
from aigc_core.evaluation.text_eval import text_metrics
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab, encode
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.stages import TrainedRun
from tasks.evaluation import evaluate
from tasks.tracking import Tracker

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


def tiny_charlstm(folder):
    """An untrained CharLSTM saved as the family saves one; its config."""
    torch.manual_seed(0)
    cfg = CharLSTMConfig(
        vocab=build_vocab(TRAIN + VAL), embed_dim=8, hidden=16, layers=1, block_size=16
    )
    save_model(folder, CharLSTM(cfg), cfg.to_dict())
    return cfg


def test_text_metrics_of_an_untrained_charlstm(tmp_path):
    cfg = tiny_charlstm(tmp_path)
    generator = families.get("charlstm").load_generator(tmp_path / WEIGHTS, tmp_path / CONFIG)
    m, _ = text_metrics(generator, TRAIN, VAL)
    # an untrained model is close to uniform over the vocabulary
    assert m["heldout_nats"] == pytest.approx(math.log(cfg.vocab_size), rel=0.1)
    assert m["bits_per_char"] == pytest.approx(m["heldout_nats"] / math.log(2))
    assert m["perplexity"] == pytest.approx(math.exp(m["heldout_nats"]))
    assert 0 < m["distinct_1"] <= 1 and 0 < m["distinct_2"] <= 1
    assert m["novelty"] > 0.9  # random characters make words the training text never had
    assert m["text_samples"] == 32 and m["heldout_chars"] == len(VAL)


def test_loss_curves_are_plotted_from_the_runs_metric_history(home):
    tracker = Tracker(home)
    run_id = tracker.start_run("curves", tags={})
    for step, (g, d) in enumerate([(3.0, 1.0), (2.0, 0.8), (1.5, 0.7)]):
        tracker.log_metrics(run_id, {"loss_g": g, "loss_d": d, "lr": 0.1}, step=step)
    history = tracker.metric_history(run_id)
    assert list(history) == ["loss_d", "loss_g"]
    assert history["loss_g"] == [(0, 3.0), (1, 2.0), (2, 1.5)]
    img = plots.loss_curves(history)
    assert img.size == (600, 350)
    assert plots.loss_curves(tracker.metric_history(tracker.start_run("none", tags={}))) is None


def test_the_evaluate_task_logs_the_familys_scores_and_plots_on_the_run(home):
    docs = [TRAIN[i : i + 60] for i in range(0, len(TRAIN), 60)] + [VAL]
    snap = write_snapshot(home.datasets, "tiny-text", text_table(docs), kind="text", source="t",
                          params={})  # fmt: skip
    tracker = Tracker(home)
    run_id = tracker.start_run("evaluate", tags={})
    tracker.log_metrics(run_id, {"loss": 3.0}, step=0)
    tracker.log_metrics(run_id, {"loss": 2.0}, step=1)
    tiny_charlstm(home.runs / run_id / "model")
    trained = TrainedRun(
        run_id=run_id,
        snapshot=snap.ref(),
        family="charlstm",
        model_name="aigc-charlstm-tiny-text",
        model_dir=str(home.runs / run_id / "model"),
        checkpoint_dir=str(home.runs / run_id / "checkpoints"),
        preset="smoke",
        device="cpu",
        steps=2,
        resumed_from_step=0,
    )
    scores = evaluate.fn(trained, str(home.root))
    assert scores.run_id == run_id and scores.metrics["bits_per_char"] > 0
    client = mlflow.MlflowClient(tracking_uri=home.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.metrics["bits_per_char"] == pytest.approx(scores.metrics["bits_per_char"])
    assert run.info.status == "RUNNING"  # registering it finishes it
    assert "loss_curves.png" in {a.path for a in client.list_artifacts(run_id)}
    path = client.download_artifacts(run_id, "loss_curves.png", str(home.root))
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 350)
