"""A small CNN digit classifier: the evaluator of a snapshot.

It plays the role Inception plays in the usual FID: its penultimate activations are the feature
space for a domain FID, and its softmax gives the confidence that curation thresholds. It is
trained on the snapshot's training split and scored on the held-out validation split.

Its training loop (`fit_classifier`) and batched embedding (`embed_in_batches`) serve the audio
evaluator too (`aigc_core.evaluation.audio_eval`), which differs in its network, its "none of
these" output and its augmentation, not in how it is trained or read out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class ClassifierConfig:
    num_classes: int = 10
    channels: int = 1
    image_size: int = 28
    width: int = 32
    feature_dim: int = 64

    def to_dict(self) -> dict:
        return {"family": "classifier", **asdict(self)}


class Classifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w, s = cfg.width, cfg.image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, W, 14, 14)
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2W, 7, 7)
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(2 * w * s * s, cfg.feature_dim),
            nn.ReLU(),  # (B, F)
        )
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, K) logits

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, F), probabilities (N, K)) for images in [0, 1], in eval mode."""
        self.eval()
        return embed_in_batches(
            x, batch_size, self.features, lambda f: torch.softmax(self.head(f), dim=1)
        )


def train_classifier(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    cfg: ClassifierConfig,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[Classifier, float]:
    """Train with light random shifts; returns the model (eval mode) and validation accuracy."""
    if int(y_train.max()) >= cfg.num_classes or int(y_train.min()) < 0:
        raise ValueError(
            f"labels must lie in [0, {cfg.num_classes}), got "
            f"[{int(y_train.min())}, {int(y_train.max())}]"
        )
    model = fit_classifier(
        lambda: Classifier(cfg),
        len(x_train),
        lambda idx, gen: (_random_shift(x_train[idx], gen), y_train[idx]),
        steps=epochs * max(1, len(x_train) // batch_size),
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )
    _, probs = model.embed(x_val)
    acc = float((probs.argmax(1) == y_val.numpy()).mean())
    log.info("evaluator classifier: held-out accuracy %.4f on %d images", acc, len(x_val))
    return model, acc


def fit_classifier(
    make_model: Callable[[], M],
    n: int,
    batch: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> M:
    """A classifier `make_model()` trained on cross-entropy for `steps` AdamW steps (weight decay
    1e-4) under a one-cycle learning rate peaking at `lr`, each on `batch(idx, gen)`: the
    (inputs, labels) of `batch_size` items drawn with replacement from [0, n), augmented as the
    caller wants with the same seeded generator. Returned in eval mode. The image and the audio
    evaluators train this way: a given seed gives the same weights (the global seed is set
    before `make_model()`, for its initial weights and its dropout)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(steps):
        xb, yb = batch(torch.randint(n, (batch_size,), generator=gen), gen)
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def embed_in_batches(
    x: torch.Tensor,
    batch_size: int,
    features: Callable[[torch.Tensor], torch.Tensor],
    probabilities: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F), class probabilities (N, K)) as float64 arrays of the inputs `x` (N, ...),
    `batch_size` at a time: `features(xb)`, then `probabilities` of those features. The caller
    sets eval mode and no_grad."""
    feats, probs = [], []
    for i in range(0, len(x), batch_size):
        f = features(x[i : i + batch_size])
        feats.append(f.double().numpy())
        probs.append(probabilities(f).double().numpy())
    return np.concatenate(feats), np.concatenate(probs)


def _random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    dx, dy = (torch.randint(-max_shift, max_shift + 1, (2,), generator=gen)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))
