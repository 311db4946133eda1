"""The training loop shared by every family: steps, metrics, checkpoints, stopping.

A family supplies a *job* (see `Job`): its modules and optimizers, a data generator, and
`train_step(step)` returning detached loss tensors. `fit` runs the steps and owns the rest:

- losses accumulate on the device and are read once per `log_every` steps, so the host does
  not wait on the device every step;
- `save(step)` (a callback: the caller decides where checkpoints go) is called every
  `checkpoint_every` steps, at the end, and when a stop is requested; a checkpoint is written
  only after the losses since the last check were found finite;
- a non-finite loss raises `NonFiniteLoss` naming the step and the last good checkpoint;
- `stop()` returning True (see `interrupt.py`: SIGTERM) saves and raises `Interrupted`.

`capture(job, step, config)` and `restore(job, state)` turn a job into a checkpoint dict and
back, including RNG states, so that a resumed run repeats the uninterrupted one exactly (CPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
from pydantic.dataclasses import dataclass
from torch import nn

from aigc_core.config_types import (
    CONFIG,
    Bool,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
)
from aigc_core.training import ddp
from aigc_core.training.checkpoint import rng_state, set_rng_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, config=CONFIG)
class TrainConfig:
    """Training settings of the language models, and of the VAE (`VAETrainConfig` adds
    augmentation; the DCGAN has GANTrainConfig)."""

    batch_size: PositiveInt = 64
    steps: PositiveInt = 1000
    lr: PositiveFloat = 1e-3
    """peak learning rate"""
    min_lr_ratio: Probability = 0.1
    """cosine decay to lr * min_lr_ratio"""
    warmup_steps: NonNegativeInt = 0
    weight_decay: NonNegativeFloat = 0.0
    grad_clip: NonNegativeFloat = 1.0
    """gradient norm clip; 0: off"""
    log_every: PositiveInt = 50
    eval_every: NonNegativeInt = 0
    """0: at every log point (language models and the VAE)"""
    eval_batches: PositiveInt = 8
    checkpoint_every: NonNegativeInt = 0
    """0: only at the end (and on SIGTERM)"""
    seed: NonNegativeInt = 0
    bf16: Bool = True
    """used only where the device supports it"""
    compile: Bool = False
    """torch.compile: only where measured to help"""

    @property
    def total_steps(self) -> int:
        return self.steps

    def to_dict(self) -> dict:
        return asdict(self)

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine decay to lr * min_lr_ratio at the last step."""
        return warmup_cosine_lr(self, step)


def warmup_cosine_lr(cfg, step: int) -> float:
    """The learning rate at `step` of a config with lr, warmup_steps, steps and min_lr_ratio:
    linear warmup, then cosine decay to lr * min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


class Job(Protocol):
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    rng: torch.Generator  # draws batches and noise; CPU
    samples_per_step: int

    def train_step(self, step: int) -> dict[str, torch.Tensor]: ...

    def evaluate(self) -> dict[str, float]: ...


class NonFiniteLoss(FloatingPointError):
    def __init__(self, step: int, losses: dict[str, float], last_checkpoint: Path | None):
        self.step, self.losses, self.last_checkpoint = step, losses, last_checkpoint
        keep = f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint else ""
        super().__init__(f"non-finite loss by step {step}: {losses}{keep}")


class Interrupted(Exception):
    """A stop was requested (SIGTERM, SIGINT): at `step`, after writing `checkpoint`; or, with
    no checkpoint and a message saying so, before training started."""

    def __init__(self, step: int, checkpoint: Path | None, message: str | None = None):
        self.step, self.checkpoint = step, checkpoint
        if message is None:
            where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint written"
            message = f"training stopped at step {step}; {where}"
        super().__init__(message)

    @classmethod
    def before_start(cls, step: int = 0) -> Interrupted:
        return cls(step, None, "stopped before training started; nothing was written")


def optimizer_kwargs(device: torch.device) -> dict:
    """Fused Adam where torch has it (CUDA, CPU), else the multi-tensor (foreach) one."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def capture(job: Job, step: int, config: dict) -> dict:
    """The job as a checkpoint dict (tensors and plain containers only)."""
    return {
        "step": step,
        "config": config,
        "modules": {k: m.state_dict() for k, m in job.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in job.optimizers.items()},
        "rng": rng_state(job.rng),
    }


def restore(job: Job, state: dict, weights_only: bool = False) -> int:
    """Load a checkpoint dict into the job; returns its step. `weights_only` loads modules only
    (a warm start), leaving optimizers and RNG fresh."""
    for k, m in job.modules.items():
        m.load_state_dict(state["modules"][k])
    if weights_only:
        return 0
    for k, o in job.optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    set_rng_state(state["rng"], job.rng)
    return int(state["step"])


def fit(
    job: Job,
    total_steps: int,
    *,
    start_step: int = 0,
    log_every: int = 50,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    save: Callable[[int], Path | None] | None = None,
    on_log: Callable[[int, dict], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[dict]:
    """Run steps start_step+1 .. total_steps; returns the metrics logged (one dict per log)."""
    history: list[dict] = []
    last_ckpt: Path | None = None
    sums: dict[str, torch.Tensor] = {}
    window, t0 = 0, time.perf_counter()
    eval_every = eval_every or log_every
    poll = 10 if ddp.is_distributed() else 1  # a collective stop check costs a round trip

    def check_finite(step: int) -> dict[str, float]:
        means = ddp.mean_over_ranks({k: v / max(window, 1) for k, v in sums.items()})
        if not all(math.isfinite(v) for v in means.values()):
            raise NonFiniteLoss(step, means, last_ckpt)
        return means

    def checkpoint(step: int) -> None:
        nonlocal last_ckpt
        check_finite(step)
        if save is not None:
            path = save(step)
            last_ckpt = path if path is not None else last_ckpt

    for step in range(start_step + 1, total_steps + 1):
        losses = job.train_step(step)
        for k, v in losses.items():
            sums[k] = sums[k] + v if k in sums else v.clone()
        window += 1
        if on_step is not None:
            on_step(step, total_steps)
        if step % log_every == 0 or step == total_steps:
            means = check_finite(step)
            dt = time.perf_counter() - t0
            metrics = {
                **means,
                "samples_per_s": window * job.samples_per_step * ddp.world_size() / dt,
            }
            if step % eval_every == 0 or step == total_steps:
                metrics.update(job.evaluate())
            history.append({"step": step, **metrics})
            log.info(
                "step %d/%d: %s",
                step,
                total_steps,
                " ".join(f"{k} {v:.4g}" for k, v in metrics.items()),
            )
            if on_log is not None:
                on_log(step, metrics)
            sums, window, t0 = {}, 0, time.perf_counter()
        saved = step == total_steps or bool(checkpoint_every and step % checkpoint_every == 0)
        if saved:
            checkpoint(step)
        if step < total_steps and stop is not None and step % poll == 0 and ddp.any_rank(stop()):
            if not saved:
                checkpoint(step)
            raise Interrupted(step, last_ckpt)
    return history
