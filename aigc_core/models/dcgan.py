"""DCGAN for small grayscale images: the seed's architecture, ported to PyTorch with its bugs fixed.

References:
- Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep Convolutional
  Generative Adversarial Networks" (2015), arXiv:1511.06434.
- The seed's Keras code (section 5.2), fixed here: the generator emits 1 channel (not 3), the
  discriminator returns a logit to be used with BCE-with-logits (the seed applied probability
  BCE to an unbounded Dense(1)), and the generator runs once per training step.

Generator: Linear(z -> 7*7*W, no bias) -> BN -> LeakyReLU(0.2) -> 3 x [ConvTranspose 5x5,
W channels, strides 1, 2, 2 -> BN -> LeakyReLU(0.2)] -> Conv 5x5 to 1 channel -> tanh.
Discriminator: Conv 64 5x5/2 -> LeakyReLU(0.2) -> Dropout(0.3) -> Conv 128 5x5/2 -> LeakyReLU(0.2)
-> Dropout(0.3) -> Linear to one logit. The seed's widths are W=128 and (64, 128).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DCGANConfig:
    z_dim: int = 100
    g_width: int = 128  # channels of every generator conv block (the seed: 128)
    d_width: int = 64  # channels of the first discriminator conv; the second has twice as many
    image_size: int = 28
    channels: int = 1
    bn_momentum: float = 0.2  # torch convention (weight of the new batch statistic)
    dropout: float = 0.3

    def __post_init__(self):
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {self.image_size}")

    def to_dict(self) -> dict:
        return {"family": "dcgan", **asdict(self)}


def _up_block(c_in: int, c_out: int, stride: int, momentum: float) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(c_in, c_out, 5, stride, 2, output_padding=stride - 1, bias=False),
        nn.BatchNorm2d(c_out, momentum=momentum),
        nn.LeakyReLU(0.2),
    ]


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        w, s = cfg.g_width, cfg.image_size // 4
        self.net = nn.Sequential(
            nn.Linear(cfg.z_dim, s * s * w, bias=False),  # (B, s*s*W)
            nn.BatchNorm1d(s * s * w, momentum=cfg.bn_momentum),
            nn.LeakyReLU(0.2),
            nn.Unflatten(1, (w, s, s)),  # (B, W, 7, 7)
            *_up_block(w, w, 1, cfg.bn_momentum),  # (B, W, 7, 7)
            *_up_block(w, w, 2, cfg.bn_momentum),  # (B, W, 14, 14)
            *_up_block(w, w, 2, cfg.bn_momentum),  # (B, W, 28, 28)
            nn.Conv2d(w, cfg.channels, 5, 1, 2, bias=False),  # (B, C, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, z) -> (B, C, H, W) in [-1, 1]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W), in eval mode (BatchNorm running statistics)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.z_dim, generator=generator, device="cpu").to(device)
        out = (self(z).float() + 1) / 2
        self.train(was_training)
        return out


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        w, s = cfg.d_width, cfg.image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 5, 2, 2),  # (B, W, 14, 14)
            nn.LeakyReLU(0.2),
            nn.Dropout(cfg.dropout),
            nn.Conv2d(w, 2 * w, 5, 2, 2),  # (B, 2W, 7, 7)
            nn.LeakyReLU(0.2),
            nn.Dropout(cfg.dropout),
            nn.Flatten(),
            nn.Linear(2 * w * s * s, 1),  # (B, 1) logit
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
