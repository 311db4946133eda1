"""Convolutional variational autoencoder for small grayscale images.

References:
- Kingma, Welling, "Auto-Encoding Variational Bayes" (2013), arXiv:1312.6114.
- Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
  Framework" (ICLR 2017): the KL term weighted by `beta`.

Encoder: Conv 4x4/2 (W) -> LeakyReLU -> Conv 4x4/2 (2W) -> LeakyReLU -> Linear to (mu, logvar).
Decoder: Linear z -> 2W x s x s -> ReLU -> ConvTranspose 4x4/2 (W) -> ReLU -> ConvTranspose 4x4/2
to C channels of Bernoulli logits. Loss = reconstruction (BCE, summed over pixels) + beta * KL,
both averaged over the batch (the negative ELBO when beta = 1).

The decoder alone is the generator that is served: `VAEDecoder(z)` maps (B, z) to images in
[-1, 1] like the DCGAN's generator, so sampling, evaluation and serving treat both alike.

Conditional VAE (`conditional=True`, `num_classes` K filled in from the training data):
- Sohn, Lee, Yan, "Learning Structured Output Representation using Deep Conditional Generative
  Models" (NeurIPS 2015): encoder q(z | x, y) and decoder p(x | z, y). The label enters both as
  a one-hot vector, concatenated to the encoder's flattened conv features before its last layer
  and to z before the decoder's first: no parameters beyond a per-class column of those layers.
  The prior stays N(0, I) (the usual simplification of Sohn's p(z | y)): the KL term pushes what
  the label already says out of z, so z keeps the style and the label the class.
An unconditional model (the default) has exactly the parameters and state dict it always had.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F

from aigc_core.config_types import (
    CONFIG,
    Bool,
    DerivedInt,
    NonNegativeFloat,
    PositiveInt,
    class_count,
)


@dataclass(frozen=True, config=CONFIG)
class VAEConfig:
    z_dim: PositiveInt = 16
    width: PositiveInt = 32
    """channels of the first conv; the second has twice as many"""
    image_size: PositiveInt = 28
    """height and width, a multiple of 4"""
    channels: PositiveInt = 1
    beta: NonNegativeFloat = 1.0
    """weight of the KL term"""
    conditional: Bool = False
    """class-conditional (CVAE): encoder and decoder take labels (a *-conditional preset)"""
    num_classes: DerivedInt = 0
    """classes of a conditional model, filled in from the training data (0: unconditional)"""

    def __post_init__(self):
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {self.image_size}")
        if self.num_classes and not self.conditional:
            raise ValueError(
                f"num_classes={self.num_classes} is for a conditional model: set conditional"
            )

    def to_dict(self) -> dict:
        return {"family": "vae", **asdict(self)}


def with_label(h: torch.Tensor, labels: torch.Tensor | None, num_classes: int, what: str):
    """(B, D) -> (B, D + K): the one-hot labels of a conditional module appended; unchanged
    for an unconditional one. Labels must be given to a conditional module, and only to one."""
    if num_classes and labels is None:
        raise ValueError(
            f"this {what} is conditional ({num_classes} classes): pass labels, (B,) int64"
        )
    if not num_classes:
        if labels is not None:
            raise ValueError(f"this {what} is unconditional: call it without labels")
        return h
    return torch.cat([h, F.one_hot(labels, num_classes).to(h.dtype)], dim=1)


class VAEEncoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        w, s, k = cfg.width, cfg.image_size // 4, class_count(cfg)
        self.net = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 4, 2, 1),  # (B, W, H/2, W/2)
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1),  # (B, 2W, s, s)
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * w * s * s + k, 2 * cfg.z_dim),  # (B, 2z): mu and logvar
        )

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) and labels (B,) of a conditional model -> mu, logvar (B, z) each."""
        k = self.cfg.num_classes
        if not k and labels is None:
            out = self.net(x)
        else:
            h = x
            for layer in self.net[:-1]:
                h = layer(h)  # ... (B, 2W*s*s)
            out = self.net[-1](with_label(h, labels, k, "encoder"))
        mu, logvar = out.chunk(2, dim=1)  # (B, z), (B, z)
        return mu, logvar


class VAEDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        w, s, k = cfg.width, cfg.image_size // 4, class_count(cfg)
        self.net = nn.Sequential(
            nn.Linear(cfg.z_dim + k, 2 * w * s * s),  # (B, 2W*s*s), from z and the label
            nn.ReLU(),
            nn.Unflatten(1, (2 * w, s, s)),  # (B, 2W, s, s)
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),  # (B, W, 2s, 2s)
            nn.ReLU(),
            nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1),  # (B, C, H, W) logits
        )

    def logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z) and labels (B,) of a conditional model -> (B, C, H, W) Bernoulli logits."""
        return self.net(with_label(z, labels, self.cfg.num_classes, "decoder"))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z) and labels (B,) of a conditional model -> (B, C, H, W) in [-1, 1]."""
        return torch.sigmoid(self.logits(z, labels)) * 2 - 1

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W), decoded from the prior N(0, I); labels (n,) for a
        conditional decoder."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.z_dim, generator=generator).to(device)
        labels = None if labels is None else labels.to(device)
        return torch.sigmoid(self.logits(z, labels).float())


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VAEEncoder(cfg)
        self.decoder = VAEDecoder(cfg)

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) in [0, 1], eps (B, z) standard normal, labels (B,) of a conditional
        model -> (logits, mu, logvar)."""
        mu, logvar = self.encoder(x, labels)
        z = mu + eps * torch.exp(0.5 * logvar)  # reparameterization, (B, z)
        return self.decoder.logits(z, labels), mu, logvar


def vae_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction, kl), each a per-image mean in nats."""
    b = x.shape[0]
    recon = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="sum") / b
    mu, logvar = mu.float(), logvar.float()
    kl = -0.5 * torch.sum(1 + logvar - mu.square() - logvar.exp()) / b
    return recon + beta * kl, recon, kl
