"""Data-parallel training with torch.distributed (DDP), as launched by `torchrun`.

`torchrun --nproc-per-node N -m aigc_core.training.launch ...` sets RANK, WORLD_SIZE and
LOCAL_RANK; `setup()` then joins the process group (nccl on CUDA, gloo on CPU) and gives each
process its device. Every rank draws different batches (its data generator is seeded with the
rank), gradients are averaged by DDP, and only rank 0 writes checkpoints and models.
Without those variables everything here is a no-op, so the same trainer runs alone.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device | None = None) -> torch.device:
    """Join the process group named by torchrun's environment; returns this rank's device."""
    if "RANK" not in os.environ or is_distributed():
        return device or torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    elif device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    log.info("rank %d/%d on %s (%s)", rank(), world_size(), device, backend)
    return device


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """The module DDP-wrapped when distributed, else itself."""
    if not is_distributed():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean of each scalar tensor over ranks, as floats (one host sync for all of them)."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in keys])
    if is_distributed():
        dist.all_reduce(stacked)
        stacked /= world_size()
    return dict(zip(keys, stacked.tolist(), strict=True))


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is True on any (so all ranks stop at the same step)."""
    if not is_distributed():
        return flag
    dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1.0 if flag else 0.0], device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()
