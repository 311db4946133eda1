"""A denoising diffusion model for small images, class-conditional with classifier-free guidance.

References:
- Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models" (2020), arXiv:2006.11239: the
  noising process and the epsilon-prediction objective.
- Nichol, Dhariwal, "Improved Denoising Diffusion Probabilistic Models" (2021),
  arXiv:2102.09672: the cosine schedule (diffusers' "squaredcos_cap_v2").
- Ho, Salimans, "Classifier-Free Diffusion Guidance" (2022), arXiv:2207.12598: one network for
  the conditional and the unconditional noise, trained by dropping labels to a "no label" class.
- Song, Meng, Ermon, "Denoising Diffusion Implicit Models" (2020), arXiv:2010.02502, and Lu et
  al., "DPM-Solver++" (2022), arXiv:2211.01095: the deterministic samplers.

The network is diffusers' `UNet2DModel` (ResNet blocks, sinusoidal timestep embedding, a class
embedding added to it) built from `DiffusionConfig`. The config also holds what sampling needs:
the training noise schedule, the sampler and its default steps and guidance; the schedules and
samplers themselves are diffusers' schedulers, in `aigc_core.generation.diffusion` (the network
never imports them). A conditional model has `num_classes + 1` class embeddings: the last index,
`null_label`, is "no label", the unconditional half of guidance.

diffusers is imported where the network is built: the family registry imports every family
module, and importing diffusers costs seconds that listing the families should not.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated, Literal

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn

from aigc_core.config_types import (
    CONFIG,
    Bool,
    DerivedInt,
    NonNegativeFloat,
    PositiveInt,
    Probability,
)

SAMPLERS = ("ddim", "dpm++")
ATTENTION_HEAD_DIM = 32  # channels per attention head (fewer channels: one head)


@dataclass(frozen=True, config=CONFIG)
class DiffusionConfig:
    image_size: PositiveInt = 28
    """height and width, divisible by 2 ** (len(block_out_channels) - 1)"""
    channels: PositiveInt = 1
    block_out_channels: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (32, 64, 64)
    """the UNet's channels per resolution; each block but the last halves the resolution"""
    layers_per_block: PositiveInt = 1
    """ResNet layers per down block (up blocks have one more)"""
    attention: Bool = False
    """self-attention at the lowest resolution (down, middle and up blocks)"""
    norm_groups: PositiveInt = 8
    """GroupNorm groups; divides every block's channels"""
    conditional: Bool = True
    """take class labels (classifier-free guidance) when the snapshot has 2 classes or more"""
    num_classes: DerivedInt = 0
    """the snapshot's classes when conditional (0: unconditional); filled in from the data"""
    num_train_timesteps: PositiveInt = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    """diffusers' name of the noise schedule (squaredcos_cap_v2: the cosine schedule)"""
    sampler: Literal["ddim", "dpm++"] = "dpm++"
    """deterministic sampler: DDIM (eta 0) or DPM-Solver++ (2nd order multistep)"""
    sampling_steps: PositiveInt = 20
    """default number of denoising steps"""
    guidance: NonNegativeFloat = 2.0
    """default classifier-free guidance weight w: eps_u + w (eps_c - eps_u); 1: none"""
    label_dropout: Probability = 0.1
    """fraction of training labels replaced by "no label" (learns the unconditional model)"""

    def __post_init__(self):
        blocks = self.block_out_channels
        factor = 2 ** (len(blocks) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by {factor} "
                f"(2 ** (len(block_out_channels) - 1) for {len(blocks)} blocks): change "
                "image_size or use fewer blocks"
            )
        bad = [c for c in blocks if c % self.norm_groups]
        if bad:
            raise ValueError(
                f"norm_groups {self.norm_groups} must divide every block's channels, not {bad}"
            )
        if self.num_classes and not self.conditional:
            raise ValueError(f"num_classes is {self.num_classes} but conditional is false")
        if self.sampling_steps > self.num_train_timesteps:
            raise ValueError(
                f"sampling_steps {self.sampling_steps} exceeds num_train_timesteps "
                f"{self.num_train_timesteps}"
            )

    def to_dict(self) -> dict:
        return {"family": "diffusion", **asdict(self), "block_out_channels": list(self.blocks)}

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(self.block_out_channels)


class DiffusionModel(nn.Module):
    """The noise predictor: `forward(x, t, labels=None)`, x (B, C, H, W) noisy images, t (B,)
    int64 timesteps in [0, num_train_timesteps), labels (B,) int64 in [0, num_classes] for a
    conditional model (num_classes: no label), none for an unconditional one."""

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        from diffusers import UNet2DModel  # see the module docstring

        self.cfg = cfg
        n = len(cfg.blocks)
        down, up = ["DownBlock2D"] * n, ["UpBlock2D"] * n
        if cfg.attention:  # the lowest resolution: the last down block, the first up block
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        low = cfg.blocks[-1]
        self.unet = UNet2DModel(
            sample_size=cfg.image_size,
            in_channels=cfg.channels,
            out_channels=cfg.channels,
            block_out_channels=cfg.blocks,
            layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=cfg.norm_groups,
            add_attention=cfg.attention,
            attention_head_dim=math.gcd(low, ATTENTION_HEAD_DIM),
            num_class_embeds=cfg.num_classes + 1 if cfg.num_classes else None,
        )

    @property
    def null_label(self) -> int:
        """The class index meaning "no label" (conditional models)."""
        return self.cfg.num_classes

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.cfg.num_classes and labels is None:
            raise ValueError(
                f"this diffusion model is conditional: give labels (B,) in [0, "
                f"{self.cfg.num_classes}] ({self.null_label}: no label)"
            )
        if not self.cfg.num_classes and labels is not None:
            raise ValueError("this diffusion model is unconditional: it takes no labels")
        return self.unet(x, t, class_labels=labels, return_dict=False)[0]  # (B, C, H, W) noise


def memory_format(device: torch.device, bf16: bool) -> torch.memory_format:
    """The layout the UNet runs fastest in on `device`, with or without bf16 autocast.

    Channels-last suits oneDNN's convolutions, and in fp32 it is the faster layout. On the CPU in
    bf16, PyTorch's GroupNorm kernel for channels-last tensors is 4 to 28x slower than for
    contiguous ones (256 x 16 x 28 x 28: 42 ms against 1.5 ms), which outweighs the convolutions'
    gain: measured on one core of an AMD EPYC (Zen 5, AVX-512 BF16), a (16, 32, 64) UNet's
    training step of 32 took 0.210 s channels-last and 0.122 s contiguous in bf16 (0.142 s
    channels-last in fp32), and its forward over 256 images 0.63 s against 0.25 s."""
    cpu_bf16 = device.type == "cpu" and bf16
    return torch.contiguous_format if cpu_bf16 else torch.channels_last
