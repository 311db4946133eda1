"""Image curation: keep images the evaluator recognizes with confidence, drop exact duplicates.

Every item gets a decision and all of its reasons (`;`-separated), so a rejected item can be
explained and a policy change can be replayed on the same batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ImagePolicy:
    min_confidence: float = 0.9  # evaluator's top-class probability
    drop_duplicates: bool = True  # byte-identical images after quantization to uint8

    def __post_init__(self):
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must lie in [0, 1], got {self.min_confidence}")

    def to_dict(self) -> dict:
        return asdict(self)


def curate_images(images_u8: np.ndarray, probs: np.ndarray, policy: ImagePolicy) -> pd.DataFrame:
    """Columns: digest, predicted_label, confidence, kept, reason (empty when kept)."""
    if len(images_u8) != len(probs):
        raise ValueError(f"{len(images_u8)} images but {len(probs)} probability rows")
    digests = [hashlib.sha256(img.tobytes()).hexdigest() for img in images_u8]
    confidence = probs.max(axis=1)
    df = pd.DataFrame(
        {
            "digest": digests,
            "predicted_label": probs.argmax(axis=1).astype(np.int16),
            "confidence": confidence.astype(np.float32),
        }
    )
    reasons: list[list[str]] = [[] for _ in range(len(df))]
    for i in np.flatnonzero(confidence < policy.min_confidence):
        reasons[i].append(f"low_confidence<{policy.min_confidence:g}")
    if policy.drop_duplicates:
        for i in np.flatnonzero(df["digest"].duplicated(keep="first").to_numpy()):
            reasons[i].append("duplicate")
    df["reason"] = [";".join(r) for r in reasons]
    df["kept"] = df["reason"] == ""
    return df
