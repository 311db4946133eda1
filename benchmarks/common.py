"""What the benchmarks share: the device's practical peak, for context next to their GFLOP/s."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, size: int = 4096) -> float:
    """GFLOP/s of the fastest of 4 runs of a size x size matmul (10 per run on CUDA)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    reps = 10 if device.type == "cuda" else 1
    best = float("inf")
    for _ in range(4):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 * reps / best / 1e9
