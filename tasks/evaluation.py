"""Task of the evaluate stage, and the per-snapshot evaluator classifier it shares with curation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from prefect import task

from aigc_core import progress
from aigc_core.atomic import staged_dir
from aigc_core.data.snapshot import find_snapshot, image_arrays, read_table
from aigc_core.evaluation.classifier import Classifier, ClassifierConfig, train_classifier
from aigc_core.evaluation.fid import fid
from aigc_core.generation.images import generate_images
from aigc_core.images import contact_sheet, to_uint8
from aigc_core.models.io import CONFIG, WEIGHTS, load_model, save_model
from aigc_core.paths import Home
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


@task(name="evaluate")
def evaluate(trained: dict, home: str) -> dict:
    """Domain FID of the candidate against held-out images, beside the real-vs-real floor."""
    h = Home.resolve(home)
    tracking.configure(h)
    run_id = trained["run_id"]
    with tracking.run_guard(run_id):
        progress.report("evaluate", 0, 3)
        evaluator, ev_metrics = load_or_train_evaluator(h, trained["snapshot_id"])
        progress.report("evaluate", 1, 3)
        table = read_table(find_snapshot(h.datasets, trained["snapshot_id"]))
        x_tr, _ = image_arrays(table, "train")
        x_va, _ = image_arrays(table, "validation")
        g = load_model(Path(trained["model_dir"]) / WEIGHTS, Path(trained["model_dir"]) / CONFIG)
        # as many generated images as real training images, so FID and its floor compare
        # sample sets of the same sizes
        fake = generate_images(g, len(x_tr), seed=FID_SEED)
        progress.report("evaluate", 2, 3)
        f_tr, _ = evaluator.embed(torch.from_numpy(x_tr))
        f_va, _ = evaluator.embed(torch.from_numpy(x_va))
        f_fake, p_fake = evaluator.embed(torch.from_numpy(fake))
        metrics = {
            "fid": fid(f_fake, f_va),
            "fid_floor": fid(f_tr, f_va),
            "evaluator_accuracy": ev_metrics["accuracy"],
            "mean_confidence": float(p_fake.max(1).mean()),
            "classes_covered": float(len(set(p_fake.argmax(1).tolist()))),
            "fid_samples_generated": float(len(fake)),
            "fid_samples_heldout": float(len(x_va)),
        }
        tracking.log_metrics(run_id, metrics)
        grid = to_uint8(fake[:64])
        tracking.log_image(run_id, contact_sheet(grid, cols=8, scale=3), "samples.png")
        progress.report("evaluate", 3, 3)
    log.info(
        "FID %.3f (floor %.3f), evaluator accuracy %.4f",
        metrics["fid"],
        metrics["fid_floor"],
        metrics["evaluator_accuracy"],
    )
    return metrics
