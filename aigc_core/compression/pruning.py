"""Structured channel pruning of the DCGAN generator, with a short fine-tune by distillation.

References:
- Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017), arXiv:1608.08710: remove
  whole channels, so the pruned network is a smaller dense one that runs fast everywhere.
- Molchanov et al., "Importance Estimation for Neural Network Pruning" (CVPR 2019),
  arXiv:1906.10771: rank channels by their effect on what follows; here mean |activation| of a
  channel on latent samples times the norm of the next layer's weights that read it.
- Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015), arXiv:1503.02531;
  Aguinaldo et al., "Compressing GANs using Knowledge Distillation" (2019), arXiv:1902.00159:
  the pruned generator learns to give the parent's image for the same latent (L2), which needs
  neither the discriminator nor the data.

Every one of the generator's four channel groups (the first layer's feature maps, then each
transposed convolution's outputs) keeps the same number of channels, so the pruned model is an
ordinary DCGAN generator of width `round(g_width * keep)`: its config is the parent's with that
width (plus a "compression" block), it loads through the family's loader and runs on the same
fast inference path (`Generator.for_inference`). Halving the width divides the transposed
convolutions' work by four.

Chosen by measurement (benchmarks/compress.py; cpu preset, width 64 -> 32, 1,024 images, on the
project's 2-core AVX-512 BF16 CPU): 2.1x the images/s of the parent on its bf16 path, 2.7x in
fp32 under AVX2 kernels; static int8 (FX graph mode, x86 backend, per-channel weights,
calibrated on latents) ran at 0.5x the parent's bf16 path and 1.25x its AVX2 fp32 path, short
of the 1.5x asked. Quality (a cpu-preset parent trained 1,500 steps on the digits, FID 32.4):
pruned without fine-tuning, FID 712; after 300 distillation steps of 64 latents, 33.3 (+2.8%).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from aigc_core.compression import CompressInputs, Compression
from aigc_core.models.dcgan import Generator
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.training.device import autocast, bf16_supported

log = logging.getLogger(__name__)

# positions in Generator.net: the layer producing each channel group, its BatchNorm, the
# activation after it (where importance is measured), and the layer reading the group
_GROUPS = (  # (producer, batchnorm, activation, consumer)
    (0, 1, 2, 4),  # the linear layer's feature maps (W, s, s)
    (4, 5, 6, 7),
    (7, 8, 9, 10),
    (10, 11, 12, 13),
)
CALIBRATION_LATENTS = 1024  # latents the channel importances are averaged over


@dataclass(frozen=True)
class Pruning:
    keep: float = 0.5  # share of each group's channels kept
    steps: int = 300  # fine-tuning steps (see the module's docstring)
    batch_size: int = 64
    lr: float = 2e-3  # Adam, decayed to 0 along a cosine

    def __post_init__(self):
        if not 0 < self.keep < 1:
            raise ValueError(
                f"keep must lie in (0, 1), the share of channels kept; got {self.keep}"
            )
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(
                f"pruning needs steps >= 0, batch_size >= 1 and lr > 0; got {self.steps}, "
                f"{self.batch_size}, {self.lr}"
            )

    @property
    def method(self) -> str:
        return f"prune-{round(100 * (1 - self.keep))}-distill"


def dcgan_channels(load_generator: Callable, tolerance: float, **settings) -> Compression:
    """The DCGAN family's `Compression`: channel pruning (`Pruning(**settings)`) and
    distillation; `load_generator` is the family's."""
    p = Pruning(**settings)
    return Compression(p.method, tolerance, functools.partial(apply_pruning, load_generator, p))


def apply_pruning(load_generator: Callable, p: Pruning, inputs: CompressInputs) -> None:
    """Write the pruned, fine-tuned generator into `inputs.out_dir` (the snapshot is not read:
    the parent's own images are the targets)."""
    parent_dir = Path(inputs.parent_dir)
    parent = load_generator(parent_dir / WEIGHTS, parent_dir / CONFIG, "cpu").module
    if type(parent) is not Generator:
        raise ValueError(
            f"channel pruning rebuilds a DCGAN Generator; the model in {parent_dir} is a "
            f"{type(parent).__name__}"
        )
    gen = torch.Generator().manual_seed(inputs.seed)
    student = prune(parent, p.keep, gen)
    mse = distill(student, parent, p, gen)
    block = {
        "method": p.method,
        "parent_g_width": parent.cfg.g_width,
        "keep": p.keep,
        "distill_steps": p.steps,
        "distill_mse": round(mse, 6),
        "seed": inputs.seed,
    }
    save_model(inputs.out_dir, student, {**student.cfg.to_dict(), "compression": block})
    log.info(
        "pruned the generator from width %d to %d; distillation MSE %.4g after %d steps",
        parent.cfg.g_width,
        student.cfg.g_width,
        mse,
        p.steps,
    )


@torch.no_grad()
def channel_importance(g: Generator, z: torch.Tensor, labels: torch.Tensor | None) -> list:
    """Per channel group, (W,) importances: mean |activation| over the latents z (N, z_dim)
    times the norm of the next layer's weights reading the channel."""
    acts = {}
    hooks = [
        g.net[a].register_forward_hook(lambda m, i, o, a=a: acts.__setitem__(a, o))
        for _, _, a, _ in _GROUPS
    ]
    try:
        g.eval()(z, labels)
    finally:
        for h in hooks:
            h.remove()
    w = g.cfg.g_width
    out = []
    for _, _, a, consumer in _GROUPS:
        x = acts[a].reshape(len(z), w, -1)  # (N, W, pixels)
        weight = g.net[consumer].weight  # ConvTranspose (W, out, k, k); Conv (C, W, k, k)
        reads = weight.transpose(0, 1) if isinstance(g.net[consumer], nn.Conv2d) else weight
        out.append(x.abs().mean(dim=(0, 2)) * reads.flatten(1).norm(dim=1))  # (W,)
    return out


@torch.no_grad()
def prune(parent: Generator, keep: float, gen: torch.Generator) -> Generator:
    """A generator of width round(g_width * keep) made of the parent's most important channels
    of each group (their weights, BatchNorm parameters and statistics copied)."""
    cfg = parent.cfg
    width = max(1, round(cfg.g_width * keep))
    if width == cfg.g_width:
        raise ValueError(f"keeping {keep:.0%} of {cfg.g_width} channels removes none")
    z, labels = _latents(cfg, CALIBRATION_LATENTS, gen)
    kept = [imp.topk(width).indices.sort().values for imp in channel_importance(parent, z, labels)]
    student = Generator(dataclasses.replace(cfg, g_width=width)).eval()
    s2 = (cfg.image_size // 4) ** 2
    rows = (kept[0][:, None] * s2 + torch.arange(s2)).flatten()  # Unflatten: feature c*s*s + p
    src, dst = parent.net, student.net
    dst[0].weight.copy_(src[0].weight[rows])
    _copy_bn(dst[1], src[1], rows)
    for g, (producer, bn, _, _) in enumerate(_GROUPS[1:], start=1):
        # ConvTranspose2d weight: (in, out, k, k); in = the previous group, out = this one
        dst[producer].weight.copy_(src[producer].weight[kept[g - 1]][:, kept[g]])
        _copy_bn(dst[bn], src[bn], kept[g])
    dst[13].weight.copy_(src[13].weight[:, kept[-1]])  # Conv2d (C, W, k, k)
    if cfg.num_classes:
        student.embed.weight.copy_(parent.embed.weight)
    return student


def _copy_bn(dst: nn.modules.batchnorm._BatchNorm, src, idx: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[idx])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _latents(cfg, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    z = torch.randn(n, cfg.z_dim, generator=gen)  # (n, z)
    labels = torch.randint(cfg.num_classes, (n,), generator=gen) if cfg.num_classes else None
    return z, labels


def distill(student: Generator, parent: Generator, p: Pruning, gen: torch.Generator) -> float:
    """Fine-tune `student` to give the parent's images on fresh latents (mean squared error);
    returns the MSE of the last tenth of the steps (on the batches as they came).

    BatchNorm stays in eval mode: its running statistics, copied from the parent, are the
    normalization the student will run with, so training and inference see one function."""
    device = torch.device("cpu")
    teacher = parent.for_inference(torch.float32)  # BatchNorm folded: the same function, faster
    opt = torch.optim.Adam(student.parameters(), lr=p.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(1, p.steps)))
    )
    student.eval()
    losses = []
    bf16 = bf16_supported(device)
    for _ in range(p.steps):
        z, labels = _latents(student.cfg, p.batch_size, gen)
        with torch.no_grad():
            target = teacher(z, labels)  # (B, C, H, W)
        with autocast(device, bf16):
            out = student(z, labels)
        loss = F.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    student.eval()
    if not losses:
        with torch.no_grad():
            z, labels = _latents(student.cfg, p.batch_size, gen)
            return F.mse_loss(student(z, labels), teacher(z, labels)).item()
    tail = losses[-max(1, len(losses) // 10) :]
    return sum(tail) / len(tail)
