"""What the benchmarks share: the JSON line's headline and machine-load keys, the device's
practical peak (for context next to their GFLOP/s), and the instruction-set cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch


def headline(
    benchmark: str, unit: str, value: float, baseline: float, digits: int = 1, ratio_digits: int = 2
) -> dict:
    """The keys every benchmark's JSON line starts with (DESIGN.md section 5): the project's
    path (`value`) against the baseline measured in the same run, and their ratio, rounded."""
    return {
        "benchmark": benchmark,
        "unit": unit,
        "value": round(value, digits),
        "baseline": round(baseline, 1),
        "ratio": round(value / baseline, ratio_digits),
    }


def machine_load() -> dict:
    """The JSON line's keys for how busy the machine was: torch's threads, the CPUs, and the
    1-minute load average (other work competing for the CPU)."""
    return {
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


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


# Instruction sets a benchmark can also run at, emulated on a CPU that has more: ATen's kernels
# and oneDNN's are both capped (bf16 is then measured slower than fp32, and not used:
# aigc_core.training.device.cpu_has_bf16).
ISAS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def add_isa_option(parser) -> None:
    parser.add_argument(
        "--isa",
        choices=sorted(ISAS),
        help="also run as on a CPU with only this instruction set (emulated in a child process "
        "with ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA set), and print both",
    )


def isa_name() -> str:
    """The instruction set this process runs at: "default" unless capped."""
    return os.environ.get("ATEN_CPU_CAPABILITY", "default")


def run_at_isa(isa: str) -> dict:
    """This script's JSON line, run again (same arguments, less --isa) in a child process whose
    kernels are capped at `isa`. Its log goes to this process's stderr."""
    argv, skip = [], False
    for arg in sys.argv:
        if skip:
            skip = False
        elif arg == "--isa":
            skip = True
        elif not arg.startswith("--isa="):
            argv.append(arg)
    out = subprocess.run(
        [sys.executable, *argv],
        env={**os.environ, **ISAS[isa]},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the {isa} run printed no JSON line:\n{out}")
    return json.loads(lines[-1])
