"""Scoring an image generator against its snapshot: what the evaluate stage logs for the image
families.

FID in the evaluator classifier's feature space beside its real-vs-real floor, precision and
recall, class diversity, memorization, the evaluator's own accuracy, and a grid of samples. The
reference is the held-out split (~360 images for digits): FID against training images would
reward copying them. The generated side is large so that its 1/N bias and its variance are
small; `fid_inf_estimate` extrapolates from FID at N and N/2 (FID(N) ~ FID_inf + c/N, Chong &
Forsyth 2020) and shows how much bias is left.
"""

from __future__ import annotations

import numpy as np
import torch

from aigc_core import progress
from aigc_core.data.snapshot import image_arrays
from aigc_core.evaluation.evaluator import evaluator_in
from aigc_core.evaluation.fid import FeatureExtractor, fid_images
from aigc_core.evaluation.samples import class_diversity, memorization_rate, precision_recall
from aigc_core.families.base import EvalInputs, Evaluation
from aigc_core.generation.images import ImageGenerator
from aigc_core.images import contact_sheet, to_uint8

FID_SEED = 2024  # fixed latents: every candidate is scored on the same noise
FID_GENERATED = 5000  # generated images per FID
PR_K = 3  # k of the k-NN balls of precision/recall (Kynkaanniemi et al. use 3)
SAMPLES_SHOWN = 64  # images in samples.png


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


def evaluate_images(inputs: EvalInputs, generator: ImageGenerator) -> Evaluation:
    """The image scores of `generator` on the snapshot of `inputs`, with `evaluator_accuracy`
    (the evaluator classifier's held-out accuracy, trained once per snapshot) and samples.png
    (the first 64 of the FID images). Reports progress as stage "evaluate", 3 steps."""
    progress.report("evaluate", 0, 3)
    folder = inputs.evaluators_dir / inputs.snapshot_id
    evaluator, ev_metrics = evaluator_in(folder, lambda: (inputs.table, inputs.manifest))
    progress.report("evaluate", 1, 3)
    x_tr, _ = image_arrays(inputs.table, "train")
    x_va, _ = image_arrays(inputs.table, "validation")
    fake = generator.generate(FID_GENERATED, seed=FID_SEED)
    progress.report("evaluate", 2, 3)
    metrics = {
        **image_metrics(evaluator, fake, x_tr, x_va),
        "evaluator_accuracy": ev_metrics["accuracy"],
    }
    sheet = contact_sheet(to_uint8(fake[:SAMPLES_SHOWN]), cols=8, scale=3)
    progress.report("evaluate", 3, 3)
    summary = (
        f"FID {metrics['fid']:.3f} (floor {metrics['fid_floor']:.3f}, {len(fake)} generated vs "
        f"{len(x_va)} held-out), precision {metrics['precision']:.3f}, recall "
        f"{metrics['recall']:.3f}, memorization {metrics['memorization_rate']:.4f}, evaluator "
        f"accuracy {metrics['evaluator_accuracy']:.4f}"
    )
    return Evaluation(metrics=metrics, images={"samples.png": sheet}, summary=summary)
