"""Task of the evaluate stage, and the per-snapshot evaluator classifier it shares with curation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from prefect import task

from aigc_core import progress
from aigc_core.atomic import staged_dir
from aigc_core.data.snapshot import find_snapshot, image_arrays, read_table, text_split
from aigc_core.evaluation.classifier import Classifier, ClassifierConfig, train_classifier
from aigc_core.evaluation.fid import FeatureExtractor, fid_images
from aigc_core.evaluation.reconstruction import reconstruct, side_by_side
from aigc_core.evaluation.samples import class_diversity, memorization_rate, precision_recall
from aigc_core.generation.images import generate_images
from aigc_core.images import contact_sheet, to_uint8
from aigc_core.models.io import CONFIG, WEIGHTS, config_from_dict, load_model, save_model
from aigc_core.models.vae import VAE
from aigc_core.paths import Home
from aigc_core.training.checkpoint import load_latest
from tasks import mlflow_adapter as tracking

log = logging.getLogger(__name__)

FID_SEED = 2024  # fixed latents: every candidate is scored on the same noise


def load_or_train_evaluator(home: Home, snapshot_id: str) -> tuple[Classifier, dict]:
    """The snapshot's evaluator classifier, trained once and reused by snapshot id."""
    path = home.evaluators / snapshot_id
    if not (path / "metrics.json").exists():
        snap = find_snapshot(home.datasets, snapshot_id)
        table = read_table(snap)
        x_tr, y_tr = image_arrays(table, "train")
        x_va, y_va = image_arrays(table, "validation")
        c, s = x_tr.shape[1], x_tr.shape[2]
        cfg = ClassifierConfig(
            num_classes=len(snap.manifest["label_set"]), channels=c, image_size=s
        )
        model, acc = train_classifier(
            torch.from_numpy(x_tr),
            torch.from_numpy(y_tr),
            torch.from_numpy(x_va),
            torch.from_numpy(y_va),
            cfg,
        )
        try:
            with staged_dir(path) as tmp:
                save_model(tmp, model, cfg.to_dict())
                (tmp / "metrics.json").write_text(
                    json.dumps(
                        {"accuracy": acc, "validation_images": len(x_va), "train_images": len(x_tr)}
                    )
                )
        except FileExistsError:
            pass  # trained concurrently by another run: use theirs
    model = load_model(path / WEIGHTS, path / CONFIG)
    return model, json.loads((path / "metrics.json").read_text())


# Generated images per FID. The reference is the held-out split (~360 images for digits): FID
# against training images would reward copying them. The generated side is large so that its
# 1/N bias and its variance are small; `fid_inf_estimate` extrapolates from FID at N and N/2
# (FID(N) ~ FID_inf + c/N, Chong & Forsyth 2020) and shows how much bias is left.
FID_GENERATED = 5000
PR_K = 3  # k of the k-NN balls of precision/recall (Kynkaanniemi et al. use 3)


def image_metrics(
    evaluator,
    fake: np.ndarray,
    x_tr: np.ndarray,
    x_va: np.ndarray,
) -> dict[str, float]:
    """Every image-generator score, from generated images and the snapshot's real splits."""
    extractor = FeatureExtractor(evaluator.features, evaluator.cfg.feature_dim)
    half = len(fake) // 2
    fids = fid_images(
        extractor,
        torch.from_numpy(x_va),
        {
            "fid": torch.from_numpy(fake),
            "fid_half": torch.from_numpy(fake[:half]),
            "fid_floor": torch.from_numpy(x_tr),  # real vs real: the best a model can hope for
        },
    )
    f_va, _ = evaluator.embed(torch.from_numpy(x_va))
    f_fake, p_fake = evaluator.embed(torch.from_numpy(fake))
    # equal set sizes: k-NN radii depend on how dense each set is
    precision, recall = precision_recall(f_va, f_fake[: len(f_va)], k=PR_K)
    return {
        "fid": fids["fid"],
        "fid_floor": fids["fid_floor"],
        "fid_inf_estimate": 2 * fids["fid"] - fids["fid_half"],
        "precision": precision,
        "recall": recall,
        "class_diversity": class_diversity(p_fake),
        "memorization_rate": memorization_rate(fake, x_tr, x_va),
        "mean_confidence": float(p_fake.max(1).mean()),
        "classes_covered": float(len(set(p_fake.argmax(1).tolist()))),
        "fid_samples_generated": float(len(fake)),
        "fid_samples_heldout": float(len(x_va)),
        "fid_samples_train": float(len(x_tr)),
    }


# Text families: held-out characters scored, and generated samples for distinct-n and novelty.
TEXT_HELDOUT_CHARS = 50_000
TEXT_SAMPLES, TEXT_SAMPLE_CHARS, TEXT_PROMPT_CHARS = 32, 200, 8


def text_metrics(model_dir: Path, train_text: str, val_text: str) -> dict[str, float]:
    """Held-out nats / bits per character / perplexity, and distinct-1/2 and novelty of
    samples drawn through the serving class from prompts cut from the held-out text."""
    from types import SimpleNamespace

    from aigc_core.evaluation.text import generation_metrics, heldout_nats, language_model_metrics
    from aigc_core.models.chars import encode
    from aigc_core.serving.text_generator import TextGenerator

    gen = TextGenerator()
    gen.load_context(
        SimpleNamespace(
            artifacts={"weights": str(model_dir / WEIGHTS), "config": str(model_dir / CONFIG)}
        )
    )
    vocab = gen.vocab
    known = set(vocab)
    val = "".join(c for c in val_text if c in known)[:TEXT_HELDOUT_CHARS]  # a warm start's vocab
    nats = heldout_nats(gen.model, encode(val, vocab), gen.model.cfg.block_size)
    step = max(1, (len(val) - TEXT_PROMPT_CHARS) // TEXT_SAMPLES)
    prompts = [val[i : i + TEXT_PROMPT_CHARS] for i in range(0, step * TEXT_SAMPLES, step)]
    samples = [text for text, _ in gen.generate(prompts, TEXT_SAMPLE_CHARS, seed=FID_SEED)]
    return {
        **language_model_metrics(nats),
        **generation_metrics(samples, train_text),
        "heldout_chars": float(len(val)),
        "text_samples": float(len(samples)),
    }


def _log_reconstructions(run_id: str, checkpoint_dir: Path, x_va) -> None:
    """Held-out images beside their reconstructions, from the full VAE of the last checkpoint
    (the served model is the decoder alone)."""
    latest = load_latest(checkpoint_dir)
    if latest is None:
        raise ValueError(f"evaluate: no VAE checkpoint in {checkpoint_dir} to reconstruct with")
    state = latest[1]
    vae = VAE(config_from_dict(state["config"]["model"]))
    vae.load_state_dict(state["modules"]["model"])
    pairs = side_by_side(x_va[:32], reconstruct(vae, x_va[:32]))
    tracking.log_image(
        run_id, contact_sheet(to_uint8(pairs), cols=8, scale=3), "reconstructions.png"
    )


@task(name="evaluate")
def evaluate(trained: dict, home: str) -> dict:
    """Score the candidate against held-out data. Image families: FID beside its real-vs-real
    floor, precision and recall, class diversity, memorization (and the VAE's held-out negative
    ELBO); text families: held-out nats, bits per character, perplexity, distinct-1/2, novelty.
    Logs the metrics, the loss curves and samples on the training run."""
    h = Home.resolve(home)
    tracking.configure(h)
    run_id, family = trained["run_id"], trained.get("family", "dcgan")
    model_dir = Path(trained["model_dir"])
    with tracking.run_guard(run_id):
        table = read_table(find_snapshot(h.datasets, trained["snapshot_id"]))
        if family in ("charlstm", "transformer"):
            progress.report("evaluate", 0, 1)
            metrics = text_metrics(
                model_dir,
                "\n\n".join(text_split(table, "train")),
                "\n\n".join(text_split(table, "validation")),
            )
            tracking.log_metrics(run_id, metrics)
            tracking.log_loss_curves(run_id)
            progress.report("evaluate", 1, 1)
            log.info(
                "held-out %.4f bits/char (perplexity %.3f), distinct-2 %.3f, novelty %.3f",
                metrics["bits_per_char"],
                metrics["perplexity"],
                metrics["distinct_2"],
                metrics["novelty"],
            )
            return metrics
        if family not in ("dcgan", "vae"):
            raise ValueError(f"evaluate: unknown model family {family!r}")
        progress.report("evaluate", 0, 3)
        evaluator, ev_metrics = load_or_train_evaluator(h, trained["snapshot_id"])
        progress.report("evaluate", 1, 3)
        x_tr, _ = image_arrays(table, "train")
        x_va, _ = image_arrays(table, "validation")
        g = load_model(model_dir / WEIGHTS, model_dir / CONFIG)
        fake = generate_images(g, FID_GENERATED, seed=FID_SEED)
        progress.report("evaluate", 2, 3)
        metrics = {
            **image_metrics(evaluator, fake, x_tr, x_va),
            "evaluator_accuracy": ev_metrics["accuracy"],
        }
        if family == "vae":
            # computed by the training job on the validation split (the encoder is not part
            # of the served model): nats per image, fixed noise
            if trained.get("final_val_neg_elbo") is None:
                raise ValueError(
                    "evaluate: the VAE's training result has no final_val_neg_elbo; the snapshot "
                    "needs a non-empty validation split"
                )
            metrics["neg_elbo"] = float(trained["final_val_neg_elbo"])
            _log_reconstructions(run_id, Path(trained["checkpoint_dir"]), x_va)
        tracking.log_metrics(run_id, metrics)
        grid = to_uint8(fake[:64])
        tracking.log_image(run_id, contact_sheet(grid, cols=8, scale=3), "samples.png")
        tracking.log_loss_curves(run_id)
        progress.report("evaluate", 3, 3)
    log.info(
        "FID %.3f (floor %.3f, %d generated vs %d held-out), precision %.3f, recall %.3f, "
        "memorization %.4f, evaluator accuracy %.4f",
        metrics["fid"],
        metrics["fid_floor"],
        len(fake),
        len(x_va),
        metrics["precision"],
        metrics["recall"],
        metrics["memorization_rate"],
        metrics["evaluator_accuracy"],
    )
    return metrics
