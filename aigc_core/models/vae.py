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
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F

from aigc_core.config_types import CONFIG, NonNegativeFloat, PositiveInt


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

    def __post_init__(self):
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {self.image_size}")

    def to_dict(self) -> dict:
        return {"family": "vae", **asdict(self)}


class VAEEncoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w, s = cfg.width, cfg.image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 4, 2, 1),  # (B, W, H/2, W/2)
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1),  # (B, 2W, s, s)
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * w * s * s, 2 * cfg.z_dim),  # (B, 2z): mu and logvar
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=1)  # (B, z), (B, z)
        return mu, logvar


class VAEDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        w, s = cfg.width, cfg.image_size // 4
        self.net = nn.Sequential(
            nn.Linear(cfg.z_dim, 2 * w * s * s),  # (B, 2W*s*s)
            nn.ReLU(),
            nn.Unflatten(1, (2 * w, s, s)),  # (B, 2W, s, s)
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),  # (B, W, 2s, 2s)
            nn.ReLU(),
            nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1),  # (B, C, H, W) logits
        )

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, C, H, W)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)) * 2 - 1  # (B, z) -> (B, C, H, W) in [-1, 1]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W), decoded from the prior N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.z_dim, generator=generator).to(device)
        return torch.sigmoid(self.logits(z).float())


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VAEEncoder(cfg)
        self.decoder = VAEDecoder(cfg)

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) in [0, 1], eps (B, z) standard normal -> (logits, mu, logvar)."""
        mu, logvar = self.encoder(x)
        z = mu + eps * torch.exp(0.5 * logvar)  # reparameterization, (B, z)
        return self.decoder.logits(z), mu, logvar


def vae_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction, kl), each a per-image mean in nats."""
    b = x.shape[0]
    recon = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="sum") / b
    mu, logvar = mu.float(), logvar.float()
    kl = -0.5 * torch.sum(1 + logvar - mu.square() - logvar.exp()) / b
    return recon + beta * kl, recon, kl
