"""Training of the diffusion model: its train config and the job run by `loop.fit` (the presets
live in `aigc_core.families.diffusion`).

One step draws a batch of images (and their labels) by index from images held on the device in
[-1, 1], noise and timesteps from the job's generator, noises the images with diffusers'
`DDPMScheduler.add_noise`, and minimizes the MSE between the predicted and the true noise
(Ho et al. 2020). A conditional model's labels are replaced by its "no label" class with
probability `label_dropout`, which teaches the same network the unconditional noise that
classifier-free guidance needs. With `augment.enabled` the clean images are augmented before
they are noised (`aigc_core.training.augment`, seeded by step). After each step the
exponential moving average of the weights (diffusers' `EMAModel`: decay
min(ema_decay, (1 + s) / (10 + s)) at its s-th update) moves towards the new weights.

The served module is a `DiffusionModel` holding the averaged weights (`ema_module()`): what is
saved, served and evaluated. The average's state is checkpointed with the optimizer's
(`job.optimizers["ema"]`: `loop.capture` and `loop.restore` call its `state_dict` and
`load_state_dict`), so a resumed run continues it exactly. Loading weights into the served
module (a warm start) sets both the trained weights and their average.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict

import torch
from pydantic.dataclasses import dataclass
from torch import nn

from aigc_core.config_types import (
    CONFIG,
    BelowOne,
    Bool,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
)
from aigc_core.generation.diffusion import schedule
from aigc_core.models.diffusion import DiffusionConfig, DiffusionModel, memory_format
from aigc_core.training import ddp
from aigc_core.training.augment import AugmentConfig, Augmenter
from aigc_core.training.device import autocast, bf16_supported
from aigc_core.training.loop import optimizer_kwargs, warmup_cosine_lr

log = logging.getLogger(__name__)

VAL_SEED = 12345  # the held-out loss's noise and timesteps: the same at every evaluation
VAL_BATCH = 256


@dataclass(frozen=True, config=CONFIG)
class DiffusionTrainConfig:
    """Training settings of the diffusion model."""

    batch_size: PositiveInt = 64
    steps: PositiveInt = 2000
    lr: PositiveFloat = 2e-3
    """AdamW's peak learning rate"""
    min_lr_ratio: Probability = 0.1
    """cosine decay to lr * min_lr_ratio"""
    warmup_steps: NonNegativeInt = 50
    weight_decay: NonNegativeFloat = 0.0
    grad_clip: NonNegativeFloat = 1.0
    """gradient norm clip; 0: off"""
    ema_decay: BelowOne = 0.999
    """the weights' moving average's largest decay (reached after ~10 / (1 - decay) steps)"""
    log_every: PositiveInt = 100
    eval_every: NonNegativeInt = 0
    """0: at every log point"""
    checkpoint_every: NonNegativeInt = 0
    """0: only at the end (and on SIGTERM)"""
    seed: NonNegativeInt = 0
    bf16: Bool = True
    """used only where the device supports it"""
    augment: AugmentConfig = AugmentConfig()
    """augmentation of the clean training images x0 (off by default)"""

    @property
    def total_steps(self) -> int:
        return self.steps

    def to_dict(self) -> dict:
        return asdict(self)

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine decay to lr * min_lr_ratio (as `TrainConfig`'s)."""
        return warmup_cosine_lr(self, step)


class DiffusionJob:
    """The diffusion model as a job for `loop.fit`."""

    def __init__(
        self,
        images: torch.Tensor,
        model_cfg: DiffusionConfig,
        train_cfg: DiffusionTrainConfig,
        device: torch.device,
        labels: torch.Tensor | None = None,
        val_images: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ):
        from diffusers.training_utils import EMAModel  # see aigc_core.models.diffusion

        check_images(images, model_cfg, "images")
        labels = check_labels(labels, len(images), model_cfg, "labels")
        self.model_cfg, self.cfg, self.device = model_cfg, train_cfg, device
        torch.manual_seed(train_cfg.seed)
        self.use_bf16 = train_cfg.bf16 and bf16_supported(device)
        self.layout = memory_format(device, self.use_bf16)
        self.model = DiffusionModel(model_cfg).to(device, memory_format=self.layout)
        self.run = ddp.wrap(self.model, device)
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=train_cfg.lr,
            weight_decay=train_cfg.weight_decay,
            **optimizer_kwargs(device),
        )
        self.ema = EMAModel(self.model.parameters(), decay=train_cfg.ema_decay, foreach=True)
        # the served copy: the average's weights, copied in by ema_module()
        self.served = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.served.register_load_state_dict_post_hook(self._warm_start)
        self.noise = schedule(model_cfg)
        self.data = to_model_range(images, device, self.layout)  # (N, C, H, W) in [-1, 1]
        self.labels = None if labels is None else labels.to(device)  # (N,)
        self.val, self.val_labels = None, None
        if val_images is not None and len(val_images):
            check_images(val_images, model_cfg, "val_images")
            self.val = to_model_range(val_images, device, self.layout)
            self.val_labels = check_labels(val_labels, len(val_images), model_cfg, "val_labels")
        self.rng = torch.Generator().manual_seed(train_cfg.seed + 1000 * ddp.rank())
        self.augment = Augmenter.of(train_cfg, ddp.rank())
        self.modules = {"model": self.model}
        self.optimizers = {"model": self.opt, "ema": self.ema}  # state_dict / load_state_dict
        self.samples_per_step = train_cfg.batch_size
        log.info(
            "training diffusion UNet %s on %s (bf16=%s, augment=%s, %s): %d images, %d steps of %d",
            list(model_cfg.blocks),
            device,
            self.use_bf16,
            self.augment.active,
            f"{model_cfg.num_classes} classes" if model_cfg.num_classes else "unconditional",
            len(self.data),
            train_cfg.steps,
            train_cfg.batch_size,
        )

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        b, cfg = self.cfg.batch_size, self.model_cfg
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr_at(step - 1)
        idx = torch.randint(len(self.data), (b,), generator=self.rng)
        noise = torch.randn(b, cfg.channels, cfg.image_size, cfg.image_size, generator=self.rng)
        t = torch.randint(cfg.num_train_timesteps, (b,), generator=self.rng)
        y = None
        if self.labels is not None:
            drop = torch.rand(b, generator=self.rng) < cfg.label_dropout
            y = torch.where(drop.to(self.device), cfg.num_classes, self.labels[idx.to(self.device)])
        x0 = self.augment(self.data[idx.to(self.device)], step)  # (B, C, H, W) in [-1, 1]
        loss = self.loss(self.run, x0, noise, t, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.ema.step(self.model.parameters())
        return {"loss": loss.detach()}

    def loss(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """Epsilon-prediction MSE of clean images x0 (B, C, H, W) in [-1, 1] noised to t (B,)."""
        noise = noise.to(self.device, memory_format=self.layout)
        t = t.to(self.device)
        xt = self.noise.add_noise(x0, noise, t)  # (B, C, H, W)
        with autocast(self.device, self.use_bf16):
            eps = net(xt, t, labels)
        return nn.functional.mse_loss(eps.float(), noise)

    def ema_module(self) -> DiffusionModel:
        """The served module, holding the moving average of the weights (eval mode)."""
        self.ema.copy_to(self.served.parameters())
        return self.served

    def _warm_start(self, module: nn.Module, incompatible) -> None:
        """Weights loaded into the served module start both the training and the average."""
        with torch.no_grad():
            for p, q in zip(self.model.parameters(), module.parameters(), strict=True):
                p.copy_(q)
        self.ema.shadow_params = [p.detach().clone() for p in self.model.parameters()]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """`val_loss`: the served (averaged) model's noise-prediction MSE on the held-out
        images, with the same noise and timesteps at every evaluation; labels kept."""
        if self.val is None:
            return {}
        net, cfg = self.ema_module(), self.model_cfg
        gen = torch.Generator().manual_seed(VAL_SEED)
        total = 0.0
        for start in range(0, len(self.val), VAL_BATCH):
            x0 = self.val[start : start + VAL_BATCH]
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(cfg.num_train_timesteps, (len(x0),), generator=gen)
            y = None if self.val_labels is None else self.val_labels[start : start + VAL_BATCH]
            y = None if y is None else y.to(self.device)
            total += self.loss(net, x0, noise, t, y).item() * len(x0)
        return {"val_loss": total / len(self.val)}


def to_model_range(
    images: torch.Tensor, device: torch.device, layout: torch.memory_format
) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1] on `device`, in the UNet's memory layout."""
    return (images.to(device, torch.float32) * 2 - 1).contiguous(memory_format=layout)


def check_images(images: torch.Tensor, cfg: DiffusionConfig, name: str) -> None:
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise ValueError(
            f"{name} must be (N, {want[0]}, {want[1]}, {want[2]}) for this model config, got "
            f"{tuple(images.shape)}: set model.image_size / model.channels to the snapshot's"
        )


def check_labels(
    labels: torch.Tensor | None, n: int, cfg: DiffusionConfig, name: str
) -> torch.Tensor | None:
    """The labels a conditional model trains with ((n,) int64 in [0, num_classes)), None for
    an unconditional one (labels given to it are not used)."""
    if not cfg.num_classes:
        return None
    if labels is None:
        raise ValueError(
            f"a conditional diffusion model ({cfg.num_classes} classes) needs {name}: train "
            "on a labelled snapshot or set model.conditional=false"
        )
    if tuple(labels.shape) != (n,):
        raise ValueError(f"{name} must be ({n},), one per image, got {tuple(labels.shape)}")
    labels = labels.to(torch.int64)
    if n and (int(labels.min()) < 0 or int(labels.max()) >= cfg.num_classes):
        raise ValueError(f"{name} must lie in [0, {cfg.num_classes}), the model's classes")
    return labels
