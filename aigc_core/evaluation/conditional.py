"""Scores that only a class-conditional image generator has: does it draw the class it is asked?

- per-class FID: for each class c, FID in the evaluator's feature space between the images
  generated for c and the held-out images of class c, beside that class's real-vs-real floor
  (training images of c against held-out images of c). The overall FID cannot see a model that
  draws a 3 when asked for a 7 as long as its classes are balanced; per-class FID can.
- label accuracy: the share of generated images the evaluator classifies as the class they
  were asked for (bounded above by the evaluator's own held-out accuracy).

Every class is scored on the same number of generated images (FID's small-sample bias depends
on it), so per-class values compare across classes and across models. A class needs
`MIN_HELDOUT` held-out (and training) images to be scored: the held-out side is small (~36 per
class for digits, fewer features than the evaluator's 64 dimensions), so its covariance is
singular. FID stays finite and well defined then (torchmetrics takes the trace of the square
root from the eigenvalues of S_a S_b, no inverse), but it is noisy and biased upwards: read a
class's FID only beside its own floor, which shares that reference set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from aigc_core.evaluation.fid import fid
from aigc_core.images import contact_sheet, to_uint8

log = logging.getLogger(__name__)

MIN_HELDOUT = 10  # held-out images a class needs for its FID to mean anything


def class_indices(labels: np.ndarray, num_classes: int, per_class: int) -> list[np.ndarray]:
    """For each class, the indices of the first `per_class` items asked for it; every class
    must have that many."""
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c}: {len(idx)} generated images, need {per_class}")
        out.append(idx)
    return out


def label_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of images (probs (N, K) from the evaluator) classified as their asked label (N,)."""
    if len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(f"probs and labels: {len(probs)} vs {len(labels)} items, need equal > 0")
    return float((probs.argmax(1) == labels).mean())


def per_class_fid(
    f_fake: np.ndarray,
    fake_labels: np.ndarray,
    f_train: np.ndarray,
    y_train: np.ndarray,
    f_heldout: np.ndarray,
    y_heldout: np.ndarray,
    num_classes: int,
) -> dict[str, float]:
    """`fid_class_<c>` and `fid_floor_class_<c>` for every class with at least `MIN_HELDOUT`
    held-out and training images, and their means `fid_per_class` / `fid_per_class_floor`
    (absent when no class qualifies). Features (N, F) in the evaluator's space."""
    out: dict[str, float] = {}
    skipped = []
    for c in range(num_classes):
        ref, train, fake = (
            f_heldout[y_heldout == c],
            f_train[y_train == c],
            f_fake[fake_labels == c],
        )
        if min(len(ref), len(train)) < MIN_HELDOUT or len(fake) < 2:
            skipped.append(c)
            continue
        out[f"fid_class_{c}"] = fid(ref, fake)
        out[f"fid_floor_class_{c}"] = fid(ref, train)  # real vs real, same reference
    scored = [c for c in range(num_classes) if c not in skipped]
    if skipped:
        log.warning(
            "per-class FID: classes %s have fewer than %d held-out or training images; not scored",
            skipped,
            MIN_HELDOUT,
        )
    if scored:
        out["fid_per_class"] = float(np.mean([out[f"fid_class_{c}"] for c in scored]))
        out["fid_per_class_floor"] = float(np.mean([out[f"fid_floor_class_{c}"] for c in scored]))
    out["fid_classes_scored"] = float(len(scored))
    return out


def class_rows(
    images: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    per_row: int = 8,
    max_rows: int = 32,
):
    """A contact sheet with one row per class (the first `max_rows` classes): the first
    `per_row` images asked for that class, its name under the row's first image."""
    cells, captions = [], []
    for c, name in enumerate(names[:max_rows]):
        idx = np.flatnonzero(labels == c)[:per_row]
        if len(idx) == 0:
            continue
        row = images[idx]  # (<= per_row, C, H, W)
        if len(row) < per_row:  # keep the grid aligned: pad with blank cells
            row = np.concatenate([row, np.ones((per_row - len(row), *row.shape[1:]), row.dtype)])
        cells.append(row)
        captions += [str(name)[:14]] + [""] * (per_row - 1)
    return contact_sheet(to_uint8(np.concatenate(cells)), captions, cols=per_row, scale=3)
