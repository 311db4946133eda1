"""The CPU's bf16 path is chosen by measurement, not by its flags alone."""

from __future__ import annotations

import builtins
import io

import pytest
import torch

from aigc_core.training import device


@pytest.fixture
def cpuinfo(monkeypatch):
    """Make /proc/cpuinfo list the given flags; clear the cached choice before and after."""
    real_open = builtins.open

    def use(flags: str):
        def fake_open(path, *a, **k):
            if str(path) == "/proc/cpuinfo":
                return io.StringIO(f"flags\t\t: fpu sse avx2 {flags}\n")
            return real_open(path, *a, **k)

        monkeypatch.setattr(builtins, "open", fake_open)

    device.cpu_has_bf16.cache_clear()
    yield use
    device.cpu_has_bf16.cache_clear()


def timings(monkeypatch, fp32: float, bf16: float) -> None:
    seconds = {torch.float32: fp32, torch.bfloat16: bf16}
    monkeypatch.setattr(device, "_matmul_seconds", lambda dtype: seconds[dtype])


def test_bf16_used_where_listed_and_faster(cpuinfo, monkeypatch):
    cpuinfo("avx512f avx512_bf16")
    timings(monkeypatch, fp32=3e-3, bf16=0.6e-3)
    assert device.cpu_has_bf16()
    assert device.bf16_supported(torch.device("cpu"))


def test_bf16_not_used_where_slower_despite_the_flag(cpuinfo, monkeypatch):
    # e.g. oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2) on an AVX-512 BF16 CPU
    cpuinfo("avx512f avx512_bf16")
    timings(monkeypatch, fp32=3e-3, bf16=450e-3)
    assert not device.cpu_has_bf16()


def test_bf16_not_measured_without_the_flag(cpuinfo, monkeypatch):
    cpuinfo("avx512f")

    def fail(dtype):
        raise AssertionError("measured a CPU that lists no bf16 dot products")

    monkeypatch.setattr(device, "_matmul_seconds", fail)
    assert not device.cpu_has_bf16()


def test_matmul_timing_restores_threads():
    threads = torch.get_num_threads()
    assert device._matmul_seconds(torch.float32, size=64) > 0
    assert torch.get_num_threads() == threads
