"""Sample-set scores for image generators, as pure functions of arrays.

- precision / recall by k-nearest-neighbour balls (Kynkaanniemi et al. 2019, "Improved
  Precision and Recall Metric for Assessing Generative Models"): each real point gets a ball
  reaching its k-th nearest real neighbour; precision is the share of generated points inside
  some real ball (fidelity), recall the share of real points inside some generated ball, with
  balls from the generated set (coverage). Computed in the evaluator's feature space.
- class diversity: an Inception-Score analogue over the evaluator classifier (Salimans et al.
  2016): exp(E_x KL(p(y|x) || p(y))). It lies in [1, K]: K when every sample is confidently one
  class and the classes are used evenly, 1 when all samples look alike (or none is confident).
- memorization rate: the share of generated samples closer to a training image than the 1st
  percentile of held-out-to-training nearest-neighbour distances, i.e. closer than almost any
  genuinely new real image is. Computed in pixel space, where a copy is a copy.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_2d(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    t = t.reshape(len(t), -1)  # images (N, C, H, W) -> (N, C*H*W)
    if len(t) < 1:
        raise ValueError(f"{name}: empty array")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def nearest_distances(
    queries: torch.Tensor, points: torch.Tensor, k: int = 1, exclude_self: bool = False
) -> torch.Tensor:
    """Distance from each query to its k-th nearest point (Euclidean), in chunks."""
    if k + int(exclude_self) > len(points):
        raise ValueError(f"k={k} needs more than {len(points)} reference points")
    out = []
    for i in range(0, len(queries), 1024):
        d = torch.cdist(queries[i : i + 1024], points)  # (b, M)
        kk = k + int(exclude_self)  # a point is its own nearest neighbour, at distance 0
        out.append(d.topk(kk, dim=1, largest=False).values[:, kk - 1])
    return torch.cat(out)


def _inside_any_ball(queries: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor):
    hits = []
    for i in range(0, len(queries), 1024):
        d = torch.cdist(queries[i : i + 1024], centers)  # (b, M)
        hits.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(hits)


def precision_recall(
    real_features: np.ndarray, fake_features: np.ndarray, k: int = 3
) -> tuple[float, float]:
    """(precision, recall) of generated features against real ones, by k-NN balls."""
    real, fake = _as_2d(real_features, "real_features"), _as_2d(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    r_real = nearest_distances(real, real, k, exclude_self=True)
    r_fake = nearest_distances(fake, fake, k, exclude_self=True)
    precision = _inside_any_ball(fake, real, r_real).float().mean().item()
    recall = _inside_any_ball(real, fake, r_fake).float().mean().item()
    return precision, recall


def class_diversity(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))) for class probabilities (N, K); in [1, K]."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"probs: need a (N >= 1, K) array, got shape {p.shape}")
    if not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs: rows must sum to 1 (pass softmax outputs, not logits)")
    marginal = p.mean(0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(1)
    return float(np.exp(kl.mean()))


def memorization_threshold(train: np.ndarray, heldout: np.ndarray, quantile: float = 0.01):
    """The `quantile` of held-out-to-training nearest-neighbour distances (pixel space)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    d = nearest_distances(_as_2d(heldout, "heldout"), _as_2d(train, "train"))
    return float(torch.quantile(d.double(), quantile))


def memorization_rate(
    samples: np.ndarray, train: np.ndarray, heldout: np.ndarray, quantile: float = 0.01
) -> float:
    """Share of samples whose nearest training image is nearer than `memorization_threshold`."""
    s, t = _as_2d(samples, "samples"), _as_2d(train, "train")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"samples and train differ in size: {s.shape[1]} vs {t.shape[1]}")
    threshold = memorization_threshold(train, heldout, quantile)
    return (nearest_distances(s, t) < threshold).float().mean().item()
