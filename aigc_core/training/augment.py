"""Data augmentation of the image trainers: small random affine transforms and elastic
distortion, batched on the device, seeded per step (issue 17).

One call warps a whole batch (B, C, H, W) with one `F.affine_grid` + one `F.grid_sample`:

- a random affine transform per image (rotation, scale, translation, shear about the centre),
  applied with probability `p`;
- an elastic distortion per image, applied with probability `p` independently of the affine one:
  a random displacement field, smoothed by a Gaussian of `elastic_sigma` pixels (Simard, Steinkraus
  & Platt 2003, "Best practices for convolutional neural networks applied to visual document
  analysis"), added to the affine grid so that the image is interpolated once.

Never a flip: a mirrored 2, 3, 4, 5, 7 or 9 is not that digit (nor a letter its letter). Bilinear
interpolation of pixels with `padding_mode="border"` (what falls outside repeats the edge, for
digits their background) keeps every output inside the input's range, so the transforms work
in whatever range a trainer holds its images ([0, 1] for the VAE, [-1, 1] for the DCGAN and the
diffusion model). A few lines of torch do this; kornia's `RandomAffine` / `RandomElasticTransform`
would do the same for a new dependency.

Reproducible on resume without checkpointing anything: the randomness of step `s` comes from a
generator seeded with (the trainer's seed, its rank, `s`) (`step_generator`), drawn on the CPU
(the same draws on any device), so a resumed run augments step `s` as the uninterrupted one did,
and the trainer's own data generator draws the same batches with augmentation on or off.

`elastic_alpha` is the displacement's standard deviation in pixels: Simard et al.'s alpha
scaled by their smoothed field's standard deviation (their alpha 34, sigma 4 on 28x28 digits is
about 1.4 px here). The defaults are for 28x28 images; the distances are in pixels.

Text gets no augmentation, by design: a character-level language model learns the exact
distribution of characters, and synthetic edits (swapped, deleted or inserted characters,
replaced words) are typos it would learn to write; its metric, nats per character, is measured
on real text, which edits move the model away from. Audio has its own transforms (random gain
with a peak limit, time shift, noise at a random SNR, a small pitch shift that is off by
default and capped on pitch-labelled data) in `aigc_core.training.augment_audio`, seeded by
this module's `step_generator`.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from pydantic.dataclasses import dataclass

from aigc_core.config_types import CONFIG, Bool, NonNegativeFloat, PositiveFloat, Probability

_SALT = 0x5A17_A06E_C0DE  # the augmentation's own streams, apart from any other seeded ones
_MIX = (0x9E37_79B9_7F4A_7C15, 0xBF58_476D_1CE4_E5B9)  # odd 64-bit constants (splitmix64's)


@dataclass(frozen=True, config=CONFIG)
class AugmentConfig:
    """Augmentation of the real images a model trains on (`train.augment.*`); off by default."""

    enabled: Bool = False
    """augment the training images (the "*-augment" presets turn it on)"""
    p: Probability = 0.5
    """probability of each transform (affine, elastic) per image, drawn independently"""
    degrees: Annotated[float, Field(strict=True, ge=0, le=45)] = 10.0
    """rotation: uniform in [-degrees, degrees]"""
    translate: Annotated[float, Field(strict=True, ge=0, le=0.5)] = 0.1
    """shift: uniform in [-translate, translate] of the width (x) and the height (y)"""
    scale: Annotated[float, Field(strict=True, ge=0, lt=1)] = 0.1
    """zoom: uniform in [1 - scale, 1 + scale]"""
    shear: Annotated[float, Field(strict=True, ge=0, le=45)] = 5.0
    """horizontal shear angle: uniform in [-shear, shear] degrees"""
    elastic_alpha: NonNegativeFloat = 1.5
    """elastic displacement's standard deviation, pixels; 0: no elastic distortion"""
    elastic_sigma: PositiveFloat = 4.0
    """smoothness of the displacement field: its Gaussian's standard deviation, pixels"""

    @property
    def affine(self) -> bool:
        """Whether the affine transform can move a pixel (any of its ranges is not zero)."""
        return bool(self.degrees or self.translate or self.shear or self.scale)

    @property
    def active(self) -> bool:
        """Whether augmentation changes anything: on, with a chance and a strength."""
        return self.enabled and self.p > 0 and (self.affine or self.elastic_alpha > 0)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one step's augmentation: a function of (seed, step) alone, so a
    resumed run draws what the uninterrupted one drew."""
    mixed = (_SALT + seed * _MIX[0] + step * _MIX[1]) % 2**64
    return torch.Generator().manual_seed(mixed)


class Augmenter:
    """A trainer's augmentation: `augmenter(images, step)` returns the batch of `step`
    augmented (or the batch itself when augmentation is off)."""

    def __init__(self, cfg: AugmentConfig | None, seed: int):
        """cfg: the train config's `augment` (None: off); seed: the trainer's seed and rank
        (e.g. `train_cfg.seed + 1000 * rank`, as its data generator's)."""
        self.cfg = cfg if cfg is not None else AugmentConfig()
        self.seed = seed

    @classmethod
    def of(cls, train_cfg, rank: int = 0) -> Augmenter:
        """The augmenter of a train config; one without an `augment` field (the language
        models' `TrainConfig`, which the VAE's extends) trains without."""
        return cls(getattr(train_cfg, "augment", None), train_cfg.seed + 1000 * rank)

    @property
    def active(self) -> bool:
        return self.cfg.active

    def __call__(self, images: torch.Tensor, step: int) -> torch.Tensor:
        if not self.cfg.active:
            return images
        return augment_images(images, self.cfg, step_generator(self.seed, step))


def augment_images(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """`images` (B, C, H, W), float, any range and device, each warped by its own random
    affine transform and elastic distortion (each with probability `cfg.p`; `cfg.enabled` is
    the caller's to check). Random draws come from `generator` (CPU). Images that draw neither
    transform are returned untouched; the dtype and memory format are kept. Differentiable in
    `images`; computed in float32 with autocast off, so a bf16 autocast around the call does
    not round the sampling grid."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"augment_images takes a float batch (B, C, H, W), got {tuple(images.shape)} "
            f"{images.dtype}"
        )
    with torch.autocast(images.device.type, enabled=False):
        out = _warp(images.float(), cfg, generator)
    if out is None:
        return images
    if images.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out.to(images.dtype)


def _warp(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor | None:
    """`augment_images` in float32; None when no image drew a transform."""
    b, _, h, w = images.shape
    device = images.device
    u = torch.rand(b, 7, generator=generator)  # (B, 7): two coins, five parameters
    use_affine = (u[:, 0] < cfg.p) & cfg.affine  # (B,)
    use_elastic = (u[:, 1] < cfg.p) & (cfg.elastic_alpha > 0)  # (B,)
    if not bool((use_affine | use_elastic).any()):
        return None
    theta = affine_matrices(u[:, 2:], use_affine, cfg, h, w)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(device, images.dtype), [b, 1, h, w], align_corners=False)
    if bool(use_elastic.any()):
        field = elastic_field(b, h, w, cfg.elastic_sigma, generator, device)  # (B, 2, H, W)
        # pixels -> normalized coordinates, where the image spans 2 in x and in y
        per_pixel = torch.tensor([2 * cfg.elastic_alpha / w, 2 * cfg.elastic_alpha / h])
        gain = use_elastic[:, None].float() * per_pixel  # (B, 2); 0 for images without one
        field = field * gain.to(device)[:, :, None, None]
        grid = grid + field.permute(0, 2, 3, 1).to(images.dtype)  # (B, H, W, 2)
    warped = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (B, C, H, W)
    keep = ~(use_affine | use_elastic)  # (B,): these stay exactly as they were
    return torch.where(keep.to(device)[:, None, None, None], images, warped)


def affine_matrices(
    u: torch.Tensor, use: torch.Tensor, cfg: AugmentConfig, h: int, w: int
) -> torch.Tensor:
    """(B, 2, 3) `affine_grid` matrices from uniform draws `u` (B, 5); identity where `use` is
    False. The transform is M = rotation @ shear @ scale about the centre, then a shift; the
    grid samples the input at M^-1 (output - shift), computed in pixel units (so a rotation
    stays a rotation on a non-square image) and mapped to normalized coordinates."""
    sym = 2 * u - 1  # (B, 5) uniform in [-1, 1)
    on = use.float()
    angle = torch.deg2rad(sym[:, 0] * cfg.degrees) * on
    scale = 1 + sym[:, 1] * cfg.scale * on
    shift_x, shift_y = sym[:, 2] * cfg.translate * 2 * on, sym[:, 3] * cfg.translate * 2 * on
    shear = torch.tan(torch.deg2rad(sym[:, 4] * cfg.shear)) * on
    cos, sin = torch.cos(angle), torch.sin(angle)
    # M^-1 = scale^-1 @ shear^-1 @ rotation^-1, with shear^-1 = [[1, -k], [0, 1]]
    a = (cos + shear * sin) / scale
    b = (sin - shear * cos) / scale
    c = -sin / scale
    d = cos / scale
    # in normalized units: D^-1 M^-1 D with D = diag(w/2, h/2)
    inv = torch.stack([torch.stack([a, b * h / w], 1), torch.stack([c * w / h, d], 1)], 1)
    shift = torch.stack([shift_x, shift_y], 1)[:, :, None]  # (B, 2, 1), normalized
    return torch.cat([inv, -inv @ shift], 2)  # (B, 2, 3)


def elastic_field(
    b: int,
    h: int,
    w: int,
    sigma: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, 2, H, W) smooth random displacements (x, y) on `device`, each of standard deviation
    1 pixel: white noise (drawn on the CPU) blurred by a Gaussian of `sigma` pixels."""
    noise = torch.randn(b, 2, h, w, generator=generator).to(device)
    blur_h, blur_w = blur_matrix(h, sigma, str(device)), blur_matrix(w, sigma, str(device))
    # the separable blur as two small matmuls, far faster than a depthwise conv on a CPU (and
    # 100x faster here with the right operand contiguous: `blur_w.T` as a view is not)
    return (blur_h @ noise) @ blur_w.T.contiguous()  # (B, 2, H, W)


@functools.lru_cache(maxsize=16)
def blur_matrix(n: int, sigma: float, device: str) -> torch.Tensor:
    """(n, n) matrix of a 1-D Gaussian blur of `sigma` over n pixels. Taps past an edge are
    dropped and each row is scaled to unit L2 norm, so white noise keeps a standard deviation
    of 1 at every pixel, the edges too (the 2-D blur's rows are products of the 1-D ones)."""
    radius = max(1, math.ceil(3 * sigma))
    i = torch.arange(n, dtype=torch.float64)
    m = torch.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * sigma**2))  # (n, n)
    m = m * ((i[:, None] - i[None, :]).abs() <= radius)
    m = m / m.norm(dim=1, keepdim=True)
    return m.float().to(device)
