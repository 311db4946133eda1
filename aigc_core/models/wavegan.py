"""WaveGAN: a GAN that draws raw waveforms with 1-D convolutions.

Reference: Donahue, McAuley, Puckette, "Adversarial Audio Synthesis" (ICLR 2019),
arXiv:1802.04208. WaveGAN is DCGAN flattened to one dimension: 5x5 kernels become length-25
ones and stride-2 (up)sampling becomes stride 4, so each layer covers four times more samples.

Generator: Linear(z -> 16 * C0) -> ReLU -> (B, C0, 16) -> n x [ConvTranspose1d, stride 4,
halving the channels, ReLU] -> the last one to 1 channel -> tanh: (B, 1, 16 * 4**n) in [-1, 1].
With width d, C0 = d * 2**(n-1): the paper's 16384-sample model (n=5) has 16d, 8d, 4d, 2d, d
channels and d=64; a 4096-sample one (n=4) starts at 8d.
Discriminator: n x [Conv1d stride 4, channels d, 2d, 4d, ..., LeakyReLU(0.2), phase shuffle
(not after the last)] -> Linear(16 * C0 -> 1 logit). No batch normalisation in either network
(the paper's choice; a gradient penalty on D is not defined per batch with it).

Phase shuffle (the paper, section 3.3): every discriminator activation map is shifted by a
random whole number of samples in [-n, n] (reflection padding), independently per example, so D
cannot tell real from fake by the phase of the generator's transposed-convolution artifacts.

`kernel` is 25 in the paper; the smoke preset uses a shorter one (cost is linear in it). Lengths
are 16 * 4**k samples (1024, 4096, 16384, 65536).

Class-conditional when `conditional` is on (the default) and the training data has two classes or
more (`num_classes` K, filled in from the data; 0: an unconditional model), as the diffusion
family decides. The conditional model is the conditional DCGAN's: a (K, K) label embedding
concatenated to z (Mirza & Osindero 2014) and a projection discriminator (Miyato & Koyama 2018):
D's logit gains <embed(y), h> with h its last features.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F

from aigc_core.config_types import (
    CONFIG,
    DERIVED,
    Bool,
    DerivedInt,
    NonNegativeInt,
    PositiveInt,
)
from aigc_core.models.dcgan import check_labels

BASE_LENGTH = 16  # samples after the generator's linear layer
STRIDE = 4
# filled in from the snapshot (`families.wavegan.prepare`), not settable: the clips' length in
# samples and their sample rate, which a saved model writes its WAV files at
Length = Annotated[int, Field(strict=True, ge=1, json_schema_extra=DERIVED)]
SampleRate = Annotated[int, Field(strict=True, ge=1, json_schema_extra=DERIVED)]


def upsampling_layers(length: int) -> int:
    """n such that length = 16 * 4**n (n >= 1); ValueError otherwise."""
    n, size = 0, BASE_LENGTH
    while size < length:
        size, n = size * STRIDE, n + 1
    if size != length or n < 1:
        raise ValueError(
            f"length must be 16 * 4**k samples with k >= 1 (64, 256, 1024, 4096, 16384, "
            f"65536), got {length}"
        )
    return n


@dataclass(frozen=True, config=CONFIG)
class WaveGANConfig:
    z_dim: PositiveInt = 100
    """latent size (the paper's 100); named as the DCGAN's so the sampling code is shared"""
    width: PositiveInt = 64
    """d: channels of the generator's last hidden layer and of D's first (the paper's 64)"""
    length: Length = 16384
    """samples per clip, 16 * 4**k: the snapshot's clip length"""
    kernel: PositiveInt = 25
    """length of every (transposed) convolution kernel (the paper's 25)"""
    phase_shuffle: NonNegativeInt = 2
    """n of D's phase shuffle: shifts in [-n, n] samples (the paper's 2; 0: off)"""
    sample_rate: SampleRate = 16000
    """Hz: the training snapshot's rate, which generated WAV files are written at"""
    conditional: Bool = True
    """class-conditional when the training data has 2 classes or more: generator and
    discriminator take labels (false: unconditional on any data)"""
    num_classes: DerivedInt = 0
    """the snapshot's classes when conditional, filled in from the data (0: unconditional)"""

    def __post_init__(self):
        upsampling_layers(self.length)
        if self.kernel < STRIDE:
            raise ValueError(f"kernel must be >= {STRIDE} (the stride), got {self.kernel}")
        if self.num_classes and not self.conditional:
            raise ValueError(
                f"num_classes={self.num_classes} is for a conditional model: set conditional"
            )

    @property
    def layers(self) -> int:
        return upsampling_layers(self.length)

    @property
    def top_channels(self) -> int:
        """C0: channels after the generator's linear layer (and of D's last conv)."""
        return self.width * 2 ** (self.layers - 1)

    def to_dict(self) -> dict:
        return {"family": "wavegan", **asdict(self)}


def _padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) of a stride-4 transposed conv that makes its input 4x longer:
    out = (in - 1) * 4 - 2p + k + op = 4 * in  <=>  2p - op = k - 4."""
    return (kernel - 3) // 2, (kernel - 4) % 2


class Generator(nn.Module):
    def __init__(self, cfg: WaveGANConfig):
        super().__init__()
        self.cfg = cfg
        c, k = cfg.top_channels, cfg.num_classes
        pad, out_pad = _padding(cfg.kernel)
        layers: list[nn.Module] = [
            nn.Linear(cfg.z_dim + k, BASE_LENGTH * c),  # (B, 16*C0)
            nn.Unflatten(1, (c, BASE_LENGTH)),  # (B, C0, 16)
            nn.ReLU(),
        ]
        for i in range(cfg.layers):
            last = i == cfg.layers - 1
            c_out = 1 if last else c // 2
            layers.append(nn.ConvTranspose1d(c, c_out, cfg.kernel, STRIDE, pad, out_pad))
            layers.append(nn.Tanh() if last else nn.ReLU())  # (B, C/2, 4x longer)
            c = c_out
        self.net = nn.Sequential(*layers)
        if k:  # after the network: an unconditional model draws the same initial weights
            self.embed = nn.Embedding(k, k)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z) and labels (B,) int64 of a conditional model -> (B, 1, L) in [-1, 1]."""
        check_labels(labels, self.cfg.num_classes, "generator")
        if labels is not None:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        return self.net(z)


def phase_shuffle(x: torch.Tensor, n: int) -> torch.Tensor:
    """Shift each example of (B, C, T) by its own random integer in [-n, n] along T, filling
    with reflection (the paper's phase shuffle). Draws from torch's global generator, which a
    checkpoint saves (`training.checkpoint.rng_state`)."""
    if n == 0:
        return x
    b, _, t = x.shape
    shift = torch.randint(-n, n + 1, (b, 1, 1), device=x.device)
    padded = F.pad(x, (n, n), mode="reflect")  # (B, C, T + 2n)
    idx = torch.arange(t, device=x.device)[None, None, :] + (n - shift)  # (B, 1, T)
    return padded.gather(2, idx.expand(-1, x.shape[1], -1))


class PhaseShuffle(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return phase_shuffle(x, self.n) if self.training else x


class Discriminator(nn.Module):
    def __init__(self, cfg: WaveGANConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.num_classes
        pad = (cfg.kernel - 1) // 2  # out = ceil(in / 4) for every kernel length
        layers: list[nn.Module] = []
        c_in, c = 1, cfg.width
        for i in range(cfg.layers):
            layers += [nn.Conv1d(c_in, c, cfg.kernel, STRIDE, pad), nn.LeakyReLU(0.2)]
            if i < cfg.layers - 1:
                layers.append(PhaseShuffle(cfg.phase_shuffle))
            c_in, c = c, 2 * c
        layers.append(nn.Flatten())  # (B, 16*C0)
        self.net = nn.Sequential(*layers)
        features = BASE_LENGTH * cfg.top_channels
        self.head = nn.Linear(features, 1)
        if k:
            self.embed = nn.Embedding(k, features)
            nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, L) and labels (B,) of a conditional model -> (B, 1) logits (or critic values)."""
        check_labels(labels, self.cfg.num_classes, "discriminator")
        h = self.net(x)  # (B, F)
        out = self.head(h)
        if labels is not None:
            out = out + (self.embed(labels) * h.float()).sum(dim=1, keepdim=True)
        return out
