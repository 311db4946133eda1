"""Device and precision choices, made once and explained in logs."""

from __future__ import annotations

import contextlib
import functools
import logging
import time

import torch

log = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` if given, else CUDA, then MPS, then CPU."""
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
def cpu_has_bf16() -> bool:
    """True when bf16 matrix products are faster than fp32 ones on this CPU, as measured.

    The CPU must list native bf16 dot products (AVX-512 BF16 or AMX), and a bf16 matmul must
    then beat an fp32 one of the same size (best of 3, about 20 ms in all): the flags alone are
    not enough, since oneDNN may be capped below them (`ONEDNN_MAX_CPU_ISA=AVX2`, as on a machine
    emulating an AVX2 one), where bf16 runs an emulated path slower than fp32. The choice is
    logged once."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    fp32, bf16 = (_matmul_seconds(dtype) for dtype in (torch.float32, torch.bfloat16))
    fast = bf16 < 0.8 * fp32
    log.info(
        "bf16 on this CPU: %s (a 512x512 matmul: %.2f ms in bf16, %.2f ms in fp32)",
        "used" if fast else "not used, slower than fp32",
        bf16 * 1e3,
        fp32 * 1e3,
    )
    return fast


def _matmul_seconds(dtype: torch.dtype, size: int = 512) -> float:
    """The best of 3 timings of a size x size matmul in `dtype` on the CPU, on one thread (the
    ratio, not the speed, is what is read)."""
    a = torch.randn(size, size).to(dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a @ a
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return best


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
