"""Image curation: evaluator confidence, near-duplicates within the batch, memorization.

Scoring and deciding are separate steps. `score_images` computes per-item scores that depend
only on the item (and the training set), so it can run shard by shard; `decide_images` applies a
policy to the scores of the whole batch, including near-duplicates across shards, so a policy
change can be replayed on a stored batch. Every item gets a decision and all of its reasons.

Scorers:
- confidence: the evaluator classifier's top-class probability (low: an unrecognizable image).
- phash: a 64-bit DCT perceptual hash (Zauner, "Implementation and Benchmarking of Perceptual
  Image Hash Functions", 2010); two items within `max_duplicate_bits` Hamming distance are
  near-duplicates and the later one is rejected.
- train_distance: RMS pixel distance in [0, 1] to the nearest training image; below
  `min_train_distance` the item is a copy of training data (memorization). On the built-in
  digits, distinct training images are never closer than 0.03 to each other.
- requested class: an item a conditional model was asked to make as class c (`requested_label`,
  null or absent when none was asked) whose `predicted_label` (the evaluator's) is another class
  is wrong_class, under the policy's `require_requested_class`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.fft
import torch
import torch.nn.functional as F

from aigc_core.curation.decisions import Reasons, flag_evaluator, train_scores
from aigc_core.curation.policy import ImagePolicy

__all__ = [
    "curate_images",
    "decide_images",
    "duplicate_of",
    "nearest_distance",
    "phash",
    "score_images",
]


def phash(images_u8: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N,) uint64 perceptual hashes: 32x32 resize, 2-D DCT, the 8x8 lowest
    frequencies thresholded at their median."""
    x = torch.from_numpy(np.asarray(images_u8, dtype=np.float32))[:, None]  # (N, 1, H, W)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    c = scipy.fft.dctn(x[:, 0].double().numpy(), axes=(1, 2), norm="ortho")  # (N, 32, 32)
    low = c[:, :8, :8].reshape(len(c), 64)
    bits = low > np.median(low, axis=1, keepdims=True)  # (N, 64)
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def duplicate_of(hashes: np.ndarray, max_bits: int, chunk: int = 2048) -> np.ndarray:
    """(N,) index of the first earlier item within `max_bits` Hamming distance, else -1."""
    h = np.asarray(hashes, dtype=np.uint64)
    out = np.full(len(h), -1, dtype=np.int64)
    for s in range(0, len(h), chunk):
        block = h[s : s + chunk]
        dist = np.bitwise_count(block[:, None] ^ h[None, :])  # (b, N)
        rows = np.arange(len(block))[:, None] + s
        close = (dist <= max_bits) & (np.arange(len(h))[None, :] < rows)  # earlier items only
        has = close.any(axis=1)
        out[s : s + chunk][has] = close[has].argmax(axis=1)
    return out


def nearest_distance(
    images_u8: np.ndarray, train: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """RMS pixel distance (values in [0, 1]) from each image to its nearest training image, and
    that image's row. `train` holds floats in [0, 1] of the same H x W (any leading shape)."""
    a = torch.from_numpy(np.asarray(images_u8, dtype=np.float32).reshape(len(images_u8), -1) / 255)
    b = torch.from_numpy(np.array(train, dtype=np.float32).reshape(len(train), -1))  # a copy
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"generated images have {a.shape[1]} pixels but training images {b.shape[1]}: "
            "curate against the snapshot the model was trained on"
        )
    b2 = (b * b).sum(1)  # (M,)
    dists, rows = [], []
    for s in range(0, len(a), chunk):
        x = a[s : s + chunk].double()
        d2 = (x * x).sum(1, keepdim=True) + b2.double()[None] - 2 * x @ b.double().T  # (n, M)
        m, i = d2.min(dim=1)
        dists.append(torch.sqrt(m.clamp_min(0) / a.shape[1]))
        rows.append(i)
    return torch.cat(dists).float().numpy(), torch.cat(rows).numpy()


def score_images(
    images_u8: np.ndarray, probs: np.ndarray, train: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-item scores. Columns: predicted_label, confidence, phash (int64 bit pattern),
    train_distance and nearest_train (row in `train`; NaN / -1 without a training set)."""
    if len(images_u8) != len(probs):
        raise ValueError(f"{len(images_u8)} images but {len(probs)} probability rows")
    df = pd.DataFrame(
        {
            "predicted_label": probs.argmax(axis=1).astype(np.int16),
            "confidence": probs.max(axis=1).astype(np.float32),
            "phash": phash(images_u8).view(np.int64),
        }
    )
    if train is None:
        df["train_distance"] = np.float32(np.nan)
        df["nearest_train"] = np.int64(-1)
    else:
        d, rows = nearest_distance(images_u8, train)
        df["train_distance"] = d
        df["nearest_train"] = rows.astype(np.int64)
    return df


def decide_images(scores: pd.DataFrame, policy: ImagePolicy) -> pd.DataFrame:
    """Add `duplicate_of`, `kept` and `reason` (all reasons, `;`-separated, empty when kept).
    Rows must be in batch order: of two near-duplicates the later one is rejected. With a
    `requested_label` column (null: no class asked), an item predicted as another class than
    the one asked is wrong_class (`policy.require_requested_class`)."""
    df = scores.copy()
    reasons = Reasons(len(df))
    flag_evaluator(reasons, df, policy)
    dup = np.full(len(df), -1, dtype=np.int64)
    if policy.max_duplicate_bits is not None:
        dup = duplicate_of(df["phash"].to_numpy().view(np.uint64), policy.max_duplicate_bits)
        reasons.flag(dup >= 0, "duplicate")
    if policy.min_train_distance is not None:
        d = train_scores(df, "train_distance", "min_train_distance", "items")
        reasons.flag(d < policy.min_train_distance, f"memorized<{policy.min_train_distance:g}")
    return reasons.decided(df, dup)


def curate_images(
    images_u8: np.ndarray,
    probs: np.ndarray,
    policy: ImagePolicy,
    train: np.ndarray | None = None,
) -> pd.DataFrame:
    """Score and decide one whole batch. Without `train`, memorization is not checked."""
    if train is None and policy.min_train_distance is not None:
        policy = ImagePolicy(**{**policy.to_dict(), "min_train_distance": None})
    return decide_images(score_images(images_u8, probs, train), policy)
