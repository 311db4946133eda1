"""Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID).

d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). Computed in float64 with scipy's
matrix square root; a tiny ridge is added when the product is near-singular, as in the reference
implementation (pytorch-fid). FID is biased upwards for small samples: compare values computed
with the same sample sizes, and read them beside the real-vs-real floor.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need a (N >= 2, D) feature array, got shape {features.shape}")
    f = features.astype(np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu_a, cov_a, mu_b, cov_b, eps: float = 1e-6) -> float:
    diff = mu_a - mu_b
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))
