"""Adversarial training of the DCGAN: presets, one step, and the loop.

One step (the seed's order, its bugs fixed): the generator runs once; the discriminator takes one
update on real and detached fake images together (one forward of 2B images: D has no BatchNorm,
so this equals two separate passes); then the generator takes one update through the frozen
discriminator. Losses stay on the device and are read once per epoch, so the host never waits on
the device inside an epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from aigc_core.models.dcgan import DCGANConfig, Discriminator, Generator
from aigc_core.training.device import autocast, bf16_supported

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GANTrainConfig:
    batch_size: int = 128
    epochs: int = 100
    steps_per_epoch: int = 1000
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    seed: int = 0
    bf16: bool = True  # used only where the device supports it

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, tuple[DCGANConfig, GANTrainConfig]] = {
    # seconds: for tests and CI
    "smoke": (
        DCGANConfig(g_width=16, d_width=8),
        GANTrainConfig(batch_size=32, epochs=2, steps_per_epoch=5, lr=2e-4, beta1=0.5),
    ),
    # a few minutes on 2 CPU cores; samples read as digits
    "cpu": (
        DCGANConfig(g_width=64, d_width=32),
        GANTrainConfig(batch_size=64, epochs=12, steps_per_epoch=250, lr=2e-4, beta1=0.5),
    ),
    # the seed's recipe: batch 128, Adam 1e-4, 100 epochs x 1000 steps; meant for a GPU
    "seed": (DCGANConfig(), GANTrainConfig()),
}


def preset(name: str) -> tuple[DCGANConfig, GANTrainConfig]:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


@dataclass
class GAN:
    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def build_gan(model_cfg: DCGANConfig, train_cfg: GANTrainConfig, device: torch.device) -> GAN:
    torch.manual_seed(train_cfg.seed)
    g = Generator(model_cfg).to(device, memory_format=torch.channels_last)
    d = Discriminator(model_cfg).to(device, memory_format=torch.channels_last)
    kw = dict(lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2))
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
    return GAN(
        g,
        d,
        torch.optim.Adam(g.parameters(), **kw, **fused),
        torch.optim.Adam(d.parameters(), **kw, **fused),
    )


def train_step(
    gan: GAN, real: torch.Tensor, z: torch.Tensor, use_bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One adversarial step on a batch of real images in [-1, 1]; returns (loss_d, loss_g)."""
    g, d = gan.generator, gan.discriminator
    bce = nn.functional.binary_cross_entropy_with_logits
    b = real.shape[0]
    targets = torch.cat(
        [torch.ones(b, 1, device=real.device), torch.zeros(b, 1, device=real.device)]
    )
    with autocast(real.device, use_bf16):
        fake = g(z)  # (B, C, H, W), the only generator forward of this step
        # discriminator: real and detached fake in one forward
        logits = d(torch.cat([real, fake.detach()]))  # (2B, 1)
        loss_d = bce(logits.float(), targets)
    gan.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    gan.opt_d.step()

    # generator: through a frozen discriminator, towards "real"
    d.requires_grad_(False)
    with autocast(real.device, use_bf16):
        loss_g = bce(d(fake).float(), targets[:b])
    gan.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    gan.opt_g.step()
    d.requires_grad_(True)
    return loss_d.detach(), loss_g.detach()


OnStep = Callable[[int, int], None]
OnEpoch = Callable[[int, dict], None]


def train_gan(
    images: torch.Tensor,
    model_cfg: DCGANConfig,
    train_cfg: GANTrainConfig,
    device: torch.device,
    on_step: OnStep | None = None,
    on_epoch: OnEpoch | None = None,
) -> tuple[GAN, list[dict]]:
    """Train on `images` ((N, C, H, W) in [0, 1]); returns the GAN and per-epoch metrics."""
    if images.ndim != 4 or images.shape[1:] != (
        model_cfg.channels,
        model_cfg.image_size,
        model_cfg.image_size,
    ):
        raise ValueError(
            f"images must be (N, {model_cfg.channels}, {model_cfg.image_size}, "
            f"{model_cfg.image_size}), got {tuple(images.shape)}"
        )
    gan = build_gan(model_cfg, train_cfg, device)
    data = (images.to(device) * 2 - 1).contiguous(memory_format=torch.channels_last)
    use_bf16 = train_cfg.bf16 and bf16_supported(device)
    log.info(
        "training DCGAN on %s (bf16=%s): %d images, %d steps of %d",
        device,
        use_bf16,
        len(data),
        train_cfg.total_steps,
        train_cfg.batch_size,
    )
    gen = torch.Generator(device="cpu").manual_seed(train_cfg.seed)
    history = []
    step = 0
    for epoch in range(1, train_cfg.epochs + 1):
        t0 = time.perf_counter()
        sum_d = torch.zeros((), device=device)
        sum_g = torch.zeros((), device=device)
        for _ in range(train_cfg.steps_per_epoch):
            idx = torch.randint(len(data), (train_cfg.batch_size,), generator=gen)
            z = torch.randn(train_cfg.batch_size, model_cfg.z_dim, generator=gen)
            loss_d, loss_g = train_step(gan, data[idx.to(device)], z.to(device), use_bf16)
            sum_d += loss_d
            sum_g += loss_g
            step += 1
            if on_step is not None:
                on_step(step, train_cfg.total_steps)
        loss_d, loss_g = (
            (sum_d / train_cfg.steps_per_epoch).item(),
            (sum_g / train_cfg.steps_per_epoch).item(),
        )
        if not (torch.isfinite(torch.tensor([loss_d, loss_g])).all()):
            raise FloatingPointError(f"non-finite loss at epoch {epoch}: D {loss_d}, G {loss_g}")
        dt = time.perf_counter() - t0
        metrics = {
            "loss_d": loss_d,
            "loss_g": loss_g,
            "images_per_s": train_cfg.steps_per_epoch * train_cfg.batch_size / dt,
        }
        history.append({"epoch": epoch, **metrics})
        log.info(
            "epoch %d/%d: loss_d %.4f loss_g %.4f (%.0f images/s)",
            epoch,
            train_cfg.epochs,
            loss_d,
            loss_g,
            metrics["images_per_s"],
        )
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    gan.generator.eval()
    return gan, history
