"""Sampling a diffusion model (`aigc_core.models.diffusion`): diffusers' schedulers, apart from
the network.

- `schedule(cfg)`: the training noise schedule, diffusers' `DDPMScheduler` (its `add_noise`
  makes the training inputs); every sampler is built `from_config` of it, so training and
  sampling share one schedule.
- `sample(model, noise, labels, guidance, steps, sampler)`: tensor in, tensor out. Deterministic
  samplers: DDIM with eta = 0 (trailing timesteps, so that the first step starts from pure noise
  at t = T - 1) or DPM-Solver++ (2nd-order multistep). Classifier-free guidance
  `eps_u + w (eps_c - eps_u)` runs the conditional and the unconditional ("no label") halves in
  one batched forward of 2B; w = 1 needs only the conditional half, w = 0 only the other.
- `DiffusionGenerator`: the `ImageGenerator` of the family (evaluation, content batches, the
  served pyfunc): the starting noise of all n items is drawn up front from one seeded generator,
  so item i is the same image whatever the batch size; options `guidance` and `sampling_steps`
  (None, a negative guidance or 0 steps: the model's defaults).

On the CPU, batches run on as many threads as torch has intra-op threads, each with one thread,
as `aigc_core.generation.images` does for one-shot generators.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from aigc_core.generation.images import ImageGenerator, check_labels, run_batches
from aigc_core.models.diffusion import SAMPLERS, DiffusionConfig, DiffusionModel, memory_format
from aigc_core.models.io import config_fields, load_weights, read_config
from aigc_core.training.device import autocast, bf16_supported

OPTIONS = ("guidance", "sampling_steps")  # generation options, the pyfunc's params beside labels
MAX_GUIDANCE = 100.0


def schedule(cfg: DiffusionConfig):
    """The training noise schedule: a `diffusers.DDPMScheduler` (epsilon prediction)."""
    from diffusers import DDPMScheduler  # imported on use, as in aigc_core.models.diffusion

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon",
        clip_sample=True,  # predicted clean images lie in [-1, 1]
    )


def sampler_scheduler(cfg: DiffusionConfig, sampler: str):
    """A fresh deterministic sampler over the training schedule (its state is per call)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    base = schedule(cfg).config
    if sampler == "ddim":
        return DDIMScheduler.from_config(base, timestep_spacing="trailing")
    if sampler == "dpm++":
        # thresholding: its predicted clean images are clipped to [-1, 1] (dynamic
        # thresholding, Saharia et al. 2022, capped at 1) as DDIM's are; at t = T - 1 of the
        # cosine schedule alpha is ~0 and the unclipped prediction is useless
        return DPMSolverMultistepScheduler.from_config(
            base, algorithm_type="dpmsolver++", solver_order=2, thresholding=True
        )
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


@torch.no_grad()
def sample(
    model: DiffusionModel,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    guidance: float,
    steps: int,
    sampler: str,
    bf16: bool = False,
) -> torch.Tensor:
    """Denoise `noise` (B, C, H, W) in `steps` steps; returns images (B, C, H, W) float32 in
    [-1, 1]. labels: (B,) int64 for a conditional model, None for an unconditional one.
    guidance: the classifier-free guidance weight w (conditional models). bf16: autocast the
    network's forward (the scheduler's arithmetic stays float32)."""
    if (labels is not None) != bool(model.cfg.num_classes):
        raise ValueError("labels are required by a conditional model and refused otherwise")
    scheduler = sampler_scheduler(model.cfg, sampler)
    scheduler.set_timesteps(steps, device=noise.device)
    b = noise.shape[0]
    null = None if labels is None else torch.full_like(labels, model.null_label)
    if labels is None or guidance == 1:
        y, halves = labels, 1  # the conditional (or unconditional model's) noise only
    elif guidance == 0:
        y, halves = null, 1  # the unconditional noise only
    else:
        y, halves = torch.cat([labels, null]), 2  # (2B,): conditional, then unconditional
    x = noise.float()
    for t in scheduler.timesteps:
        inp = x if halves == 1 else torch.cat([x, x])  # (B or 2B, C, H, W)
        with autocast(noise.device, bf16):
            eps = model(inp, t.expand(len(inp)), y).float()
        if halves == 2:
            eps_c, eps_u = eps[:b], eps[b:]
            eps = eps_u + guidance * (eps_c - eps_u)
        x = scheduler.step(eps, t, x).prev_sample  # DDIM: eta 0 (its default)
    return x.clamp_(-1, 1)


def starting_noise(n: int, cfg: DiffusionConfig, seed: int) -> torch.Tensor:
    """The noise items 0..n-1 start from, drawn at once from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, cfg.channels, cfg.image_size, cfg.image_size, generator=gen)


class DiffusionGenerator(ImageGenerator):
    """A trained `DiffusionModel` ready to sample; `predict` is `ImageGenerator`'s, with the
    params `labels`, `guidance` and `sampling_steps`."""

    def options(self, guidance=None, sampling_steps=None) -> tuple[float, int]:
        """(guidance, steps) asked for, the model's defaults where None, a negative guidance
        or 0 steps; a value out of range raises ValueError naming it."""
        cfg = self.module.cfg
        if guidance is None or (_is_number(guidance) and guidance < 0):
            guidance = cfg.guidance
        if not _is_number(guidance) or not math.isfinite(guidance) or guidance > MAX_GUIDANCE:
            raise ValueError(
                f"guidance must be a number in [0, {MAX_GUIDANCE:g}] (negative: the model's "
                f"default, {cfg.guidance:g}), got {guidance!r}"
            )
        if sampling_steps is None or (_is_number(sampling_steps) and sampling_steps == 0):
            sampling_steps = cfg.sampling_steps
        if (
            not _is_number(sampling_steps)
            or int(sampling_steps) != sampling_steps
            or not 1 <= sampling_steps <= cfg.num_train_timesteps
        ):
            raise ValueError(
                f"sampling_steps must be an integer in [1, {cfg.num_train_timesteps}] (0: the "
                f"model's default, {cfg.sampling_steps}), got {sampling_steps!r}"
            )
        return float(guidance), int(sampling_steps)

    def generate(
        self,
        n: int,
        seed: int,
        batch_size: int = 256,
        on_batch=None,
        labels=None,
        guidance: float | None = None,
        sampling_steps: int | None = None,
        **unknown,
    ) -> np.ndarray:
        """n images (n, C, H, W) float32 in [0, 1]; the same (n, seed, labels, guidance,
        sampling_steps) gives the same images whatever batch_size."""
        if unknown:
            raise ValueError(
                f"unknown generation option(s) {', '.join(sorted(unknown))}: a diffusion model "
                f"takes {', '.join(OPTIONS)}"
            )
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        w, steps = self.options(guidance, sampling_steps)
        labels = check_labels(labels, n, self.num_classes)  # (n,) or None
        y_all = None if labels is None else torch.from_numpy(labels)
        model = self.module.eval()
        cfg = model.cfg
        device = next(model.parameters()).device
        use_bf16 = bf16_supported(device)
        layout = memory_format(device, use_bf16)
        model.to(memory_format=layout)  # conv weights only; idempotent
        noise = starting_noise(n, cfg, seed)  # (n, C, H, W)

        def run(start: int) -> torch.Tensor:  # inference mode and autocast are per thread
            z = noise[start : start + batch_size].to(device, memory_format=layout)
            y = None if y_all is None else y_all[start : start + batch_size].to(device)
            with torch.inference_mode():
                x = sample(model, z, y, w, steps, cfg.sampler, bf16=use_bf16)
            return ((x + 1) / 2).cpu().contiguous()  # (B, C, H, W) in [0, 1]

        return run_batches(run, n, batch_size, device, on_batch)


def load_generator(
    weights: Path, config: Path, device: str | torch.device = "cpu"
) -> DiffusionGenerator:
    """The generator of a saved diffusion model (weights.safetensors + config.json)."""
    cfg = DiffusionConfig(**config_fields(read_config(config)))
    return DiffusionGenerator(load_weights(DiffusionModel(cfg), weights, device))


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
