"""Scoring an image generator against its snapshot: what the evaluate stage logs for the image
families.

FID in the evaluator classifier's feature space beside its real-vs-real floor, precision and
recall, class diversity, memorization, the evaluator's own accuracy, and a grid of samples. The
reference is the held-out split (~360 images for digits): FID against training images would
reward copying them. The generated side is large so that its 1/N bias and its variance are
small; `fid_inf_estimate` extrapolates from FID at N and N/2 (FID(N) ~ FID_inf + c/N, Chong &
Forsyth 2020) and shows how much bias is left.

A class-conditional generator (`generator.num_classes > 0`) is scored the same way on images
asked for the classes in turn (`labels.balanced`, what it draws when given no labels), and
also per class (`aigc_core.evaluation.conditional`): FID of each class's images against that
class's held-out images beside its real-vs-real floor, and the share of images the evaluator
recognizes as their requested class. Its samples.png has one row per class.
"""

from __future__ import annotations

import numpy as np
import torch

from aigc_core import progress
from aigc_core.data.snapshot import image_arrays
from aigc_core.evaluation import conditional
from aigc_core.evaluation.evaluator import evaluator_in
from aigc_core.evaluation.fid import FeatureExtractor, fid_images
from aigc_core.evaluation.samples import class_diversity, memorization_rate, precision_recall
from aigc_core.families.base import EvalInputs, Evaluation
from aigc_core.generation.images import ImageGenerator
from aigc_core.generation.labels import balanced
from aigc_core.images import contact_sheet, to_uint8

FID_SEED = 2024  # fixed latents: every candidate is scored on the same noise
FID_GENERATED = 5000  # generated images per FID
PR_K = 3  # k of the k-NN balls of precision/recall (Kynkaanniemi et al. use 3)
SAMPLES_SHOWN = 64  # images in samples.png
CLASS_GENERATED_MIN = 200  # generated images per class for per-class FID, at least


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
    (the first 64 of the FID images; for a conditional generator, a row per class), plus the
    per-class scores of a conditional generator (`class_metrics`). Reports progress as stage
    "evaluate", in percent of the work."""
    num_classes = int(getattr(generator, "num_classes", 0))  # a plugin's may not say: none
    bar = _Bar()
    folder = inputs.evaluators_dir / inputs.snapshot_id
    evaluator, ev_metrics = evaluator_in(folder, lambda: (inputs.table, inputs.manifest))
    bar.at(_EVALUATOR_DONE)
    x_tr, y_tr = image_arrays(inputs.table, "train")
    x_va, y_va = image_arrays(inputs.table, "validation")
    if num_classes:
        if num_classes != evaluator.cfg.num_classes:
            raise ValueError(
                f"the generator knows {num_classes} classes but snapshot {inputs.snapshot_id} "
                f"has {evaluator.cfg.num_classes}: evaluate it on the snapshot it was trained on"
            )
        fake, labels, per_class = generate_per_class(generator, num_classes, bar)
        main = fake[:FID_GENERATED]  # the classes in turn, as an unconditional set
    else:
        main = generator.generate(FID_GENERATED, seed=FID_SEED, on_batch=bar.generating(0))
    bar.at(_GENERATED)
    metrics = {
        **image_metrics(evaluator, main, x_tr, x_va),
        "evaluator_accuracy": ev_metrics["accuracy"],
    }
    summary = (
        f"FID {metrics['fid']:.3f} (floor {metrics['fid_floor']:.3f}, {len(main)} generated vs "
        f"{len(x_va)} held-out), precision {metrics['precision']:.3f}, recall "
        f"{metrics['recall']:.3f}, memorization {metrics['memorization_rate']:.4f}, evaluator "
        f"accuracy {metrics['evaluator_accuracy']:.4f}"
    )
    if num_classes:
        bar.at(_SCORED)
        metrics.update(
            class_metrics(evaluator, fake, labels, per_class, (x_tr, y_tr), (x_va, y_va))
        )
        names = inputs.manifest.get("label_names") or [str(c) for c in range(num_classes)]
        sheet = conditional.class_rows(fake, labels, names)
        summary += f", label accuracy {metrics['label_accuracy']:.4f}"
        if "fid_per_class" in metrics:
            summary += (
                f", per-class FID {metrics['fid_per_class']:.3f} (floor "
                f"{metrics['fid_per_class_floor']:.3f}, {per_class} generated per class)"
            )
    else:
        sheet = contact_sheet(to_uint8(main[:SAMPLES_SHOWN]), cols=8, scale=3)
    bar.at(_DONE)
    return Evaluation(metrics=metrics, images={"samples.png": sheet}, summary=summary)


def generate_per_class(
    generator: ImageGenerator, num_classes: int, bar: _Bar | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(images (N, C, H, W), the label each was asked for (N,), m): the FID set with the
    classes in turn, then, when it holds fewer than `CLASS_GENERATED_MIN` images of a class, as
    many more per class as it lacks, from the next seed; m images of each class are scored.

    m = max(FID_GENERATED // K, CLASS_GENERATED_MIN): up to 25 classes the FID set alone gives
    every class its m images (500 for 10 classes), so per-class scores cost no generation;
    beyond that, FID from fewer images per class would be dominated by small-sample bias."""
    bar = bar or _Bar()
    per_class = max(FID_GENERATED // num_classes, CLASS_GENERATED_MIN)
    extra = num_classes * (per_class - FID_GENERATED // num_classes)
    bar.images = FID_GENERATED + extra
    labels = balanced(FID_GENERATED, num_classes)
    fake = generator.generate(
        FID_GENERATED, seed=FID_SEED, labels=labels, on_batch=bar.generating(0)
    )
    if extra:
        more = balanced(extra, num_classes)
        fake = np.concatenate(
            [
                fake,
                generator.generate(
                    extra, seed=FID_SEED + 1, labels=more, on_batch=bar.generating(FID_GENERATED)
                ),
            ]
        )
        labels = np.concatenate([labels, more])
    return fake, labels, per_class


def class_metrics(
    evaluator,
    fake: np.ndarray,
    labels: np.ndarray,
    per_class: int,
    train: tuple[np.ndarray, np.ndarray],
    heldout: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """`label_accuracy` and the per-class FIDs (`conditional.per_class_fid`) of a conditional
    generator's images `fake` (N, C, H, W) asked for `labels` (N,), on `per_class` images of
    each class; `train` and `heldout` are the snapshot's (images, labels)."""
    k = evaluator.cfg.num_classes
    idx = np.concatenate(conditional.class_indices(labels, k, per_class))
    f_fake, p_fake = evaluator.embed(torch.from_numpy(fake[idx]))
    f_tr, _ = evaluator.embed(torch.from_numpy(train[0]))
    f_va, _ = evaluator.embed(torch.from_numpy(heldout[0]))
    fids = conditional.per_class_fid(
        f_fake, labels[idx], f_tr, train[1], f_va, heldout[1], num_classes=k
    )
    return {
        "label_accuracy": conditional.label_accuracy(p_fake, labels[idx]),
        **fids,
        "fid_samples_per_class": float(per_class),
    }


# the evaluate stage's progress, in percent: the evaluator (trained on a snapshot's first
# evaluation), generating (by images), then scoring
_EVALUATOR_DONE, _GENERATED, _SCORED, _DONE = 10, 80, 90, 100


class _Bar:
    def __init__(self):
        self.images = FID_GENERATED  # to generate in all
        progress.report("evaluate", 0, _DONE)

    def at(self, percent: int) -> None:
        progress.report("evaluate", percent, _DONE)

    def generating(self, offset: int):
        """`on_batch(done, n)` of a generate call that follows `offset` images."""
        span = _GENERATED - _EVALUATOR_DONE

        def on_batch(done: int, n: int) -> None:
            self.at(_EVALUATOR_DONE + span * min(offset + done, self.images) // self.images)

        return on_batch
