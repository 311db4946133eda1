"""Batched image sampling.

Latents are drawn for all n items up front from one seeded generator, so item i is the same
image whatever the batch size; batches then run through the generator in inference mode, in bf16
with channels-last convolutions where the device supports it (about 2x faster than contiguous
bf16 on an AVX-512 BF16 CPU). A generator that offers `for_inference(dtype)` (the DCGAN) runs
as that inference form: BatchNorm folded, weights stored in the compute dtype.
"""

from __future__ import annotations

import numpy as np
import torch

from aigc_core.training.device import autocast, bf16_supported


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))  # (n, z)


def generate_images(
    generator: torch.nn.Module,
    n: int,
    seed: int,
    batch_size: int = 512,
    bf16: bool = True,
    on_batch=None,
) -> np.ndarray:
    """n images (n, C, H, W) float32 in [0, 1] from a generator that maps (B, z) -> [-1, 1]."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator.eval()
    device = next(generator.parameters()).device
    z_all = latents(n, generator.cfg.z_dim, seed)
    use_bf16 = bf16 and bf16_supported(device)
    if hasattr(generator, "for_inference"):  # the DCGAN: folded weights in the compute dtype
        net, cast = generator.for_inference(torch.bfloat16 if use_bf16 else torch.float32), False
    else:
        net, cast = generator, use_bf16
        if use_bf16:
            generator.to(memory_format=torch.channels_last)  # conv weights only; idempotent
    out = []
    with torch.inference_mode(), autocast(device, cast):
        for start in range(0, n, batch_size):
            x = net(z_all[start : start + batch_size].to(device))  # (B, C, H, W)
            out.append(((x.float() + 1) / 2).clamp_(0, 1).cpu().contiguous())
            if on_batch is not None:
                on_batch(min(start + batch_size, n), n)
    return torch.cat(out).numpy()
