"""Training of the convolutional VAE: the job run by `loop.fit` (the presets live in
`aigc_core.families.vae`).

One step draws a batch by index from images held on the device and noise from the job's
generator, and minimizes reconstruction + beta * KL (the negative ELBO when beta = 1). A
conditional VAE (`num_classes` > 0) draws each batch's labels with its images (the same indices:
no other random draw) and gives them to the encoder and the decoder.

Its train config is the language models' `TrainConfig` with `augment`
(`aigc_core.training.augment`): with `augment.enabled` each batch is augmented before the
encoder sees it, and the VAE reconstructs the augmented images. (A plain `TrainConfig` trains
without.)
"""

from __future__ import annotations

import logging

import torch
from pydantic.dataclasses import dataclass

from aigc_core.config_types import CONFIG
from aigc_core.models.vae import VAE, VAEConfig, vae_loss
from aigc_core.training import ddp
from aigc_core.training.augment import AugmentConfig, Augmenter
from aigc_core.training.device import autocast, bf16_supported
from aigc_core.training.gan import check_labels
from aigc_core.training.loop import TrainConfig, optimizer_kwargs

log = logging.getLogger(__name__)


@dataclass(frozen=True, config=CONFIG)
class VAETrainConfig(TrainConfig):
    """Training settings of the VAE: the language models' with image augmentation."""

    augment: AugmentConfig = AugmentConfig()
    """augmentation of the training images (off by default)"""


class VAEJob:
    def __init__(
        self,
        images: torch.Tensor,
        model_cfg: VAEConfig,
        train_cfg: VAETrainConfig | TrainConfig,
        device: torch.device,
        val_images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ):
        """labels, val_labels: (N,) int64 of the images, read by a conditional model only."""
        want = (model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(
                f"images must be (N, {want[0]}, {want[1]}, {want[2]}), got {tuple(images.shape)}"
            )
        labels = check_labels(labels, images, model_cfg, "VAE")
        if val_images is not None:
            val_labels = check_labels(val_labels, val_images, model_cfg, "VAE")
        self.model_cfg, self.cfg, self.device = model_cfg, train_cfg, device
        torch.manual_seed(train_cfg.seed)
        self.model = VAE(model_cfg).to(device, memory_format=torch.channels_last)
        self.run = ddp.wrap(self.model, device)
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=train_cfg.lr, **optimizer_kwargs(device)
        )
        self.data = images.to(device).contiguous(memory_format=torch.channels_last)  # [0, 1]
        self.val = None if val_images is None else val_images.to(device)
        self.labels = None if labels is None else labels.to(device)  # (N,) int64
        self.val_labels = None if val_labels is None else val_labels.to(device)
        self.use_bf16 = train_cfg.bf16 and bf16_supported(device)
        self.rng = torch.Generator().manual_seed(train_cfg.seed + 1000 * ddp.rank())
        self.augment = Augmenter.of(train_cfg, ddp.rank())
        self.modules = {"model": self.model}
        self.optimizers = {"model": self.opt}
        self.samples_per_step = train_cfg.batch_size
        log.info(
            "training VAE on %s (bf16=%s, augment=%s): %d images, %d steps of %d",
            device,
            self.use_bf16,
            self.augment.active,
            len(self.data),
            train_cfg.steps,
            train_cfg.batch_size,
        )

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        b = self.cfg.batch_size
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr_at(step - 1)
        idx = torch.randint(len(self.data), (b,), generator=self.rng)
        eps = torch.randn(b, self.model_cfg.z_dim, generator=self.rng)
        idx = idx.to(self.device)
        x = self.augment(self.data[idx], step)  # (B, C, H, W) in [0, 1]
        cond = () if self.labels is None else (self.labels[idx],)  # (B,) of a conditional VAE
        with autocast(self.device, self.use_bf16):
            logits, mu, logvar = self.run(x, eps.to(self.device), *cond)
        loss, recon, kl = vae_loss(logits, x, mu, logvar, self.model_cfg.beta)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Negative ELBO on held-out images (nats per image), with a fixed noise draw."""
        if self.val is None:
            return {}
        self.model.eval()
        gen = torch.Generator().manual_seed(12345)
        total, n = 0.0, 0
        for start in range(0, len(self.val), 512):
            x = self.val[start : start + 512]
            eps = torch.randn(len(x), self.model_cfg.z_dim, generator=gen).to(self.device)
            cond = () if self.val_labels is None else (self.val_labels[start : start + 512],)
            with autocast(self.device, self.use_bf16):
                logits, mu, logvar = self.model(x, eps, *cond)
            loss, _, _ = vae_loss(logits, x, mu, logvar, 1.0)
            total, n = total + loss.item() * len(x), n + len(x)
        self.model.train()
        return {"val_neg_elbo": total / n}
