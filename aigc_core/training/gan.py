"""Adversarial training of the DCGAN: its train config, one step, and the loop (the presets
live in `aigc_core.families.dcgan`).

One step (the seed's order, its bugs fixed): the generator runs once; the discriminator takes one
update on real and detached fake images together (one forward of 2B images: D has no BatchNorm,
so this equals two separate passes); then the generator takes one update through the frozen
discriminator. Losses stay on the device and are read once per epoch, so the host never waits on
the device inside an epoch.

With `augment.enabled` the real images the discriminator sees are augmented
(`aigc_core.training.augment`: small affine transforms and elastic distortion, seeded by step).

A conditional model (`num_classes` > 0) draws each batch's labels with its images (the same
indices: no other random draw) and asks the generator for the same labels, so fakes follow the
data's class mix; the discriminator judges real and fake images each with its label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pydantic.dataclasses
import torch
from torch import nn

from aigc_core.config_types import (
    CONFIG,
    BelowOne,
    Bool,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from aigc_core.models.dcgan import DCGANConfig, Discriminator, Generator
from aigc_core.training import ddp
from aigc_core.training.augment import AugmentConfig, Augmenter
from aigc_core.training.device import autocast, bf16_supported
from aigc_core.training.loop import fit, optimizer_kwargs

log = logging.getLogger(__name__)


@pydantic.dataclasses.dataclass(frozen=True, config=CONFIG)
class GANTrainConfig:
    """Training settings of the DCGAN. It runs `epochs * steps_per_epoch` steps (the seed's
    terms; batches are drawn at random, so an epoch is a logging period) unless `steps` sets
    the total, the setting every family shares (`aigc train --steps`)."""

    batch_size: PositiveInt = 128
    epochs: PositiveInt = 100
    steps_per_epoch: PositiveInt = 1000
    """steps per epoch, the logging period"""
    steps: NonNegativeInt = 0
    """total steps; 0: epochs * steps_per_epoch"""
    lr: PositiveFloat = 1e-4
    """Adam's learning rate, both networks"""
    beta1: BelowOne = 0.9
    beta2: BelowOne = 0.999
    seed: NonNegativeInt = 0
    bf16: Bool = True
    """used only where the device supports it"""
    checkpoint_every: NonNegativeInt = 0
    """steps; 0: only at the end (and on SIGTERM)"""
    augment: AugmentConfig = AugmentConfig()
    """augmentation of the real images the discriminator sees (off by default)"""

    @property
    def total_steps(self) -> int:
        return self.steps or self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GAN:
    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    wrapped: tuple[nn.Module, nn.Module] | None = None  # (G, D) wrapped for DDP


def build_gan(model_cfg: DCGANConfig, train_cfg: GANTrainConfig, device: torch.device) -> GAN:
    torch.manual_seed(train_cfg.seed)
    g = Generator(model_cfg).to(device, memory_format=torch.channels_last)
    d = Discriminator(model_cfg).to(device, memory_format=torch.channels_last)
    kw = dict(lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2))
    kw |= optimizer_kwargs(device)
    return GAN(g, d, torch.optim.Adam(g.parameters(), **kw), torch.optim.Adam(d.parameters(), **kw))


def train_step(
    gan: GAN,
    real: torch.Tensor,
    z: torch.Tensor,
    use_bf16: bool,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One adversarial step on a batch of real images in [-1, 1] (with their labels (B,) for
    a conditional GAN, which the fakes are asked for too); returns (loss_d, loss_g)."""
    g, d = gan.generator, gan.discriminator
    cond = () if labels is None else (labels,)  # an unconditional call stays as it was
    both = () if labels is None else (torch.cat([labels, labels]),)  # (2B,)
    g_run, d_run = gan.wrapped or (g, d)  # DDP wrappers when distributed
    bce = nn.functional.binary_cross_entropy_with_logits
    b = real.shape[0]
    targets = torch.cat(
        [torch.ones(b, 1, device=real.device), torch.zeros(b, 1, device=real.device)]
    )
    with autocast(real.device, use_bf16):
        fake = g_run(z, *cond)  # (B, C, H, W), the only generator forward of this step
        # discriminator: real and detached fake in one forward
        logits = d_run(torch.cat([real, fake.detach()]), *both)  # (2B, 1)
        loss_d = bce(logits.float(), targets)
    gan.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    gan.opt_d.step()

    # generator: through a frozen discriminator, towards "real"
    d.requires_grad_(False)
    # (through the raw module: no DDP gradient sync for D here, its grads are not used)
    with autocast(real.device, use_bf16):
        loss_g = bce(d(fake, *cond).float(), targets[:b])
    gan.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    gan.opt_g.step()
    d.requires_grad_(True)
    return loss_d.detach(), loss_g.detach()


class GANJob:
    """The DCGAN as a job for `loop.fit`: batches and latents drawn by index from a seeded
    generator, images (and a conditional model's labels) held on the device."""

    def __init__(
        self,
        images: torch.Tensor,
        model_cfg: DCGANConfig,
        train_cfg: GANTrainConfig,
        device: torch.device,
        labels: torch.Tensor | None = None,
    ):
        check_images(images, model_cfg)
        labels = check_labels(labels, images, model_cfg, "DCGAN")
        self.model_cfg, self.train_cfg, self.device = model_cfg, train_cfg, device
        self.gan = build_gan(model_cfg, train_cfg, device)
        if ddp.is_distributed():
            self.gan.wrapped = (
                ddp.wrap(self.gan.generator, device),
                ddp.wrap(self.gan.discriminator, device),
            )
        self.data = (images.to(device) * 2 - 1).contiguous(memory_format=torch.channels_last)
        self.labels = None if labels is None else labels.to(device)  # (N,) int64
        self.use_bf16 = train_cfg.bf16 and bf16_supported(device)
        self.rng = torch.Generator(device="cpu").manual_seed(train_cfg.seed + 1000 * ddp.rank())
        self.augment = Augmenter.of(train_cfg, ddp.rank())
        self.modules = {"generator": self.gan.generator, "discriminator": self.gan.discriminator}
        self.optimizers = {"generator": self.gan.opt_g, "discriminator": self.gan.opt_d}
        self.samples_per_step = train_cfg.batch_size
        log.info(
            "training DCGAN on %s (bf16=%s, augment=%s): %d images, %d steps of %d",
            device,
            self.use_bf16,
            self.augment.active,
            len(self.data),
            train_cfg.total_steps,
            train_cfg.batch_size,
        )

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        b = self.train_cfg.batch_size
        idx = torch.randint(len(self.data), (b,), generator=self.rng)
        z = torch.randn(b, self.model_cfg.z_dim, generator=self.rng)
        idx = idx.to(self.device)
        labels = None if self.labels is None else self.labels[idx]  # (B,)
        # Only the real images are augmented: D learns that augmented digits are real, so G is
        # pushed towards them too, and the augmentations can "leak" into what G draws (Karras
        # et al. 2020). Small ones are acceptable in kind: a digit turned a few degrees, shifted
        # or scaled a few percent or slightly bent is still a plausible digit of its class.
        # Measured (benchmarks/augment_effect.py, 10% of digits) they still cost FID, and
        # augmenting the fakes too (DiffAugment, Zhao et al. 2020) cost more: see the README.
        real = self.augment(self.data[idx], step)  # (B, C, H, W) in [-1, 1]
        loss_d, loss_g = train_step(self.gan, real, z.to(self.device), self.use_bf16, labels)
        return {"loss_d": loss_d, "loss_g": loss_g}

    def evaluate(self) -> dict[str, float]:
        return {}


def check_images(images: torch.Tensor, model_cfg: DCGANConfig) -> None:
    want = (model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise ValueError(
            f"images must be (N, {want[0]}, {want[1]}, {want[2]}), got {tuple(images.shape)}"
        )


def check_labels(
    labels: torch.Tensor | None, images: torch.Tensor, model_cfg, what: str
) -> torch.Tensor | None:
    """The labels a model trains with: (N,) int64 in [0, num_classes) for a conditional
    model, None for an unconditional one (which ignores any it is given)."""
    k = model_cfg.num_classes
    if not k:
        return None
    if labels is None:
        raise ValueError(
            f"a conditional {what} trains on labelled images; this data has none: use an "
            "unconditional preset"
        )
    labels = torch.as_tensor(labels)
    if labels.shape != (len(images),) or labels.dtype != torch.int64:
        raise ValueError(
            f"labels must be (N,) = ({len(images)},) int64, got {tuple(labels.shape)} "
            f"{labels.dtype}"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(
            f"labels must lie in [0, {k}) for a model of {k} classes, got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    return labels


OnStep = Callable[[int, int], None]
OnEpoch = Callable[[int, dict], None]


def train_gan(
    images: torch.Tensor,
    model_cfg: DCGANConfig,
    train_cfg: GANTrainConfig,
    device: torch.device,
    on_step: OnStep | None = None,
    on_epoch: OnEpoch | None = None,
    labels: torch.Tensor | None = None,
) -> tuple[GAN, list[dict]]:
    """Train on `images` ((N, C, H, W) in [0, 1]; `labels` (N,) for a conditional model);
    returns the GAN and per-epoch metrics (loss_d, loss_g, images_per_s). For checkpoints and
    resuming use GANJob with loop.fit."""
    job = GANJob(images, model_cfg, train_cfg, device, labels)

    def epoch_end(step: int, m: dict) -> None:
        if on_epoch is not None:
            on_epoch(step // train_cfg.steps_per_epoch, epoch_metrics(m))

    logged = fit(
        job,
        train_cfg.total_steps,
        log_every=train_cfg.steps_per_epoch,
        on_log=epoch_end,
        on_step=on_step,
    )
    job.gan.generator.eval()
    history = [
        {"epoch": m["step"] // train_cfg.steps_per_epoch, **epoch_metrics(m)} for m in logged
    ]
    return job.gan, history


def epoch_metrics(m: dict) -> dict:
    return {"loss_d": m["loss_d"], "loss_g": m["loss_g"], "images_per_s": m["samples_per_s"]}
