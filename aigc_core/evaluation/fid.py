"""Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID).

d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), computed by torchmetrics'
`FrechetInceptionDistance` in float64 (it takes the trace of the square root from the
eigenvalues of S_a S_b, which needs no hand-written matrix square root and no ridge). The
"Inception" network is ours: any module mapping images to (B, F) features, here the snapshot's
evaluator classifier (`FeatureExtractor`), so FID is measured in a domain feature space.

FID is biased upwards for small samples (the bias shrinks like 1/N, Chong & Forsyth 2020):
compare values computed with the same sample sizes, and read them beside the real-vs-real floor
computed with those sizes. `fid_images` scores several generated sets against one reference set
without re-embedding the reference.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


class FeatureExtractor(nn.Module):
    """Wraps `features: images (B, C, H, W) -> (B, F)` for torchmetrics, returning float64."""

    def __init__(self, features: nn.Module, num_features: int):
        super().__init__()
        self.features = features
        self.num_features = num_features  # torchmetrics reads this instead of a dummy forward

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.features.eval()
        return self.features(x).double()  # (B, F)


class _Identity(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def _check(features: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if t.ndim != 2 or len(t) < 2:
        raise ValueError(f"{name}: need a (N >= 2, D) feature array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: features contain NaN or inf; check the model's outputs")
    return t


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two precomputed feature sets (N_a, D) and (N_b, D)."""
    a, b = _check(features_a, "features_a"), _check(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    metric = FrechetInceptionDistance(feature=_Identity(a.shape[1]))
    metric.update(a, real=True)
    metric.update(b, real=False)
    return float(metric.compute())


def fid_images(
    extractor: FeatureExtractor,
    reference: torch.Tensor,
    candidates: dict[str, torch.Tensor],
    batch_size: int = 512,
) -> dict[str, float]:
    """FID of each candidate image set against one reference set, embedded once."""
    if len(reference) < 2:
        raise ValueError(f"reference: need >= 2 images, got {len(reference)}")
    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
    for i in range(0, len(reference), batch_size):
        metric.update(reference[i : i + batch_size], real=True)
    out = {}
    for name, images in candidates.items():
        if len(images) < 2:
            raise ValueError(f"{name}: need >= 2 images, got {len(images)}")
        metric.reset()  # keeps the reference statistics
        for i in range(0, len(images), batch_size):
            metric.update(images[i : i + batch_size], real=False)
        out[name] = float(metric.compute())
    return out
