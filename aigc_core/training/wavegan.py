"""Adversarial training of WaveGAN (`aigc_core.models.wavegan`): its train config, one step, the
job that `loop.fit` (and so the engine) runs resumably. The presets are the family's
(`aigc_core.families.wavegan`).

Two losses (`loss`):
- "wgan-gp", the paper's: Wasserstein critic with a gradient penalty (Gulrajani et al. 2017,
  lambda 10) on random interpolates, `d_steps` (5) critic updates per generator update, Adam
  1e-4, betas (0.5, 0.9). Six discriminator passes and a double backward per generator step.
- "ns-r1": the non-saturating GAN loss with an R1 penalty on real clips (Mescheder, Geiger,
  Nowozin, "Which Training Methods for GANs do actually Converge?", ICML 2018), applied lazily
  every `penalty_every` steps with its weight scaled by that interval (Karras et al. 2020,
  StyleGAN2): one discriminator update per generator update and no per-step double backward,
  about 4x fewer passes per generator step than WGAN-GP, which is what a 2-core CPU can afford.
  The cpu and smoke presets use it; the gpu preset the paper's loss.

The penalties are computed in float32 outside autocast (a double backward through bf16 convs is
neither supported everywhere nor accurate); the adversarial passes run in bf16 where the device
has it. Batches and latents are drawn from the job's seeded generator and phase shuffle from
torch's global one: a checkpoint holds both (`loop.capture`), so a resumed run repeats the
uninterrupted one (CPU).

A conditional model (`num_classes` > 0) draws each batch's labels with its clips and asks the
generator for the same labels, as the conditional DCGAN does.

With `augment.enabled` the real clips the discriminator sees are augmented (random gain, time
shift, noise, and an optional small pitch shift: `aigc_core.training.augment_audio`, seeded by
step, so a resumed run augments as the uninterrupted one did and the batches drawn are the same
with augmentation on or off).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Literal

import numpy as np
import pydantic.dataclasses
import torch
from torch import nn
from torch.nn import functional as F

from aigc_core.config_types import (
    CONFIG,
    BelowOne,
    Bool,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from aigc_core.models.wavegan import Discriminator, Generator, WaveGANConfig
from aigc_core.training import ddp
from aigc_core.training.augment_audio import (
    AudioAugmentConfig,
    AudioAugmenter,
    check_pitch_labels,
)
from aigc_core.training.device import autocast, bf16_supported
from aigc_core.training.gan import check_labels
from aigc_core.training.loop import optimizer_kwargs

log = logging.getLogger(__name__)

MONITOR_CLIPS = 128  # clips the generator makes at each evaluation, for the monitor
MONITOR_SEED = 2024


@pydantic.dataclasses.dataclass(frozen=True, config=CONFIG)
class WaveGANTrainConfig:
    """Training settings of WaveGAN: `steps` generator updates of `batch_size` clips."""

    batch_size: PositiveInt = 64
    steps: PositiveInt = 2000
    log_every: PositiveInt = 100
    """steps per logging period (and evaluation, when the job has a monitor)"""
    loss: Literal["wgan-gp", "ns-r1"] = "ns-r1"
    """wgan-gp: the paper's; ns-r1: non-saturating with lazy R1 (cheaper; see the module)"""
    d_steps: PositiveInt = 1
    """discriminator updates per generator update (the paper's WGAN-GP: 5)"""
    penalty: NonNegativeFloat = 1.0
    """WGAN-GP's lambda (the paper's 10) or R1's gamma; 0: no penalty"""
    penalty_every: PositiveInt = 4
    """R1 every this many steps, weighted by it (lazy regularisation); WGAN-GP ignores it: its
    gradient penalty is part of every critic update"""
    lr: PositiveFloat = 1e-4
    """Adam's learning rate, both networks"""
    beta1: BelowOne = 0.5
    beta2: BelowOne = 0.9
    seed: NonNegativeInt = 0
    bf16: Bool = True
    """used only where the device supports it"""
    checkpoint_every: NonNegativeInt = 0
    """steps; 0: only at the end (and on SIGTERM)"""
    augment: AudioAugmentConfig = AudioAugmentConfig()
    """augmentation of the real clips the discriminator sees (off by default)"""

    @property
    def total_steps(self) -> int:
        return self.steps

    def to_dict(self) -> dict:
        return asdict(self)


@dataclasses.dataclass
class WaveGAN:
    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    wrapped: tuple[nn.Module, nn.Module] | None = None  # (G, D) wrapped for DDP


def build_wavegan(
    model_cfg: WaveGANConfig, train_cfg: WaveGANTrainConfig, device: torch.device
) -> WaveGAN:
    torch.manual_seed(train_cfg.seed)
    g, d = Generator(model_cfg).to(device), Discriminator(model_cfg).to(device)
    kw = dict(lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2))
    kw |= optimizer_kwargs(device)
    return WaveGAN(
        g, d, torch.optim.Adam(g.parameters(), **kw), torch.optim.Adam(d.parameters(), **kw)
    )


def clips_tensor(pcm: np.ndarray) -> torch.Tensor:
    """int16 PCM (N, L) -> float32 (N, 1, L) in [-1, 1], what the model trains on."""
    pcm = np.asarray(pcm)
    if pcm.ndim != 2 or pcm.dtype != np.int16:
        raise ValueError(f"PCM clips must be (N, L) int16, got {pcm.shape} {pcm.dtype}")
    return torch.from_numpy(pcm.astype(np.float32) / 32768.0)[:, None]


def _penalty(d: nn.Module, x: torch.Tensor, cond: tuple) -> torch.Tensor:
    """(B,) squared gradient norm of D at x, float32, differentiable (create_graph)."""
    x = x.detach().float().requires_grad_(True)
    out = d(x, *cond).float().sum()
    (grad,) = torch.autograd.grad(out, x, create_graph=True)
    return grad.square().flatten(1).sum(1)


def discriminator_step(
    gan: WaveGAN,
    cfg: WaveGANTrainConfig,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor | None,
    use_bf16: bool,
    with_penalty: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One D update on real and (detached) fake clips; returns (adversarial loss, penalty)."""
    d = gan.discriminator
    d_run = gan.wrapped[1] if gan.wrapped else d
    cond = () if labels is None else (labels,)
    both = () if labels is None else (torch.cat([labels, labels]),)
    b = real.shape[0]
    with autocast(real.device, use_bf16):
        out = d_run(torch.cat([real, fake.detach()]), *both).float()  # (2B, 1)
    real_out, fake_out = out[:b], out[b:]
    if cfg.loss == "wgan-gp":
        loss = fake_out.mean() - real_out.mean()
    else:  # non-saturating: softplus(-D(real)) + softplus(D(fake))
        loss = F.softplus(-real_out).mean() + F.softplus(fake_out).mean()
    pen = torch.zeros((), device=real.device)
    if with_penalty and cfg.penalty > 0:
        if cfg.loss == "wgan-gp":  # (|grad D(x_hat)| - 1)^2 at random interpolates
            eps = torch.rand(b, 1, 1, device=real.device)
            x_hat = eps * real + (1 - eps) * fake.detach().float()
            pen = (_penalty(d, x_hat, cond).sqrt() - 1).square().mean()
            loss_total = loss + cfg.penalty * pen
        else:  # R1: gamma/2 |grad D(x)|^2 on real clips, weighted by the lazy interval
            pen = _penalty(d, real, cond).mean()
            loss_total = loss + cfg.penalty / 2 * cfg.penalty_every * pen
    else:
        loss_total = loss
    gan.opt_d.zero_grad(set_to_none=True)
    loss_total.backward()
    gan.opt_d.step()
    return loss.detach(), pen.detach()


def generator_step(
    gan: WaveGAN,
    cfg: WaveGANTrainConfig,
    fake: torch.Tensor,
    labels: torch.Tensor | None,
    use_bf16: bool,
) -> torch.Tensor:
    """One G update through the frozen discriminator; returns G's loss."""
    d = gan.discriminator
    cond = () if labels is None else (labels,)
    d.requires_grad_(False)
    with autocast(fake.device, use_bf16):
        out = d(fake, *cond).float()
    loss = -out.mean() if cfg.loss == "wgan-gp" else F.softplus(-out).mean()
    gan.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    gan.opt_g.step()
    d.requires_grad_(True)
    return loss.detach()


class WaveGANJob:
    """WaveGAN as a job for `loop.fit`: clips (N, 1, L), floats in [-1, 1] or int16 PCM (and a
    conditional model's labels) held on the device, batches and latents drawn by index from a
    seeded generator.

    `monitor(clips (n, L) float32) -> metrics`, if given, scores `MONITOR_CLIPS` clips generated
    from fixed latents at every evaluation (e.g. the audio evaluator's recognition rate), so a
    run's log shows the generator learning; without one `evaluate` returns nothing (as GANJob).
    """

    def __init__(
        self,
        clips: torch.Tensor,
        model_cfg: WaveGANConfig,
        train_cfg: WaveGANTrainConfig,
        device: torch.device,
        labels: torch.Tensor | None = None,
        monitor: Callable[[np.ndarray], dict[str, float]] | None = None,
    ):
        check_clips(clips, model_cfg)
        labels = check_labels(labels, clips, model_cfg, "WaveGAN")
        check_pitch_labels(train_cfg.augment, labelled=labels is not None)
        self.model_cfg, self.train_cfg, self.device = model_cfg, train_cfg, device
        self.gan = build_wavegan(model_cfg, train_cfg, device)
        if ddp.is_distributed():
            self.gan.wrapped = (
                ddp.wrap(self.gan.generator, device),
                ddp.wrap(self.gan.discriminator, device),
            )
        # int16 PCM stays int16 on the device (half the memory of float32; a batch is scaled
        # when drawn): 10,000 clips of 16384 samples are 330 MB instead of 655 MB
        self.data = clips.to(device)
        self.labels = None if labels is None else labels.to(device)
        self.use_bf16 = train_cfg.bf16 and bf16_supported(device)
        self.rng = torch.Generator(device="cpu").manual_seed(train_cfg.seed + 1000 * ddp.rank())
        self.augment = AudioAugmenter.of(train_cfg, ddp.rank())
        self.monitor = monitor
        self.modules = {"generator": self.gan.generator, "discriminator": self.gan.discriminator}
        self.optimizers = {"generator": self.gan.opt_g, "discriminator": self.gan.opt_d}
        self.samples_per_step = train_cfg.batch_size
        log.info(
            "training WaveGAN (%s) on %s (bf16=%s, augment=%s): %d clips of %d samples, "
            "%d steps of %d",
            train_cfg.loss,
            device,
            self.use_bf16,
            self.augment.active,
            len(self.data),
            model_cfg.length,
            train_cfg.total_steps,
            train_cfg.batch_size,
        )

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        b = self.train_cfg.batch_size
        idx = torch.randint(len(self.data), (b,), generator=self.rng).to(self.device)
        z = torch.randn(b, self.model_cfg.z_dim, generator=self.rng).to(self.device)
        labels = None if self.labels is None else self.labels[idx]
        real = self.data[idx]
        real = real.float() / 32768 if real.dtype == torch.int16 else real.float()
        return real, z, labels

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        cfg, gan = self.train_cfg, self.gan
        g_run = gan.wrapped[0] if gan.wrapped else gan.generator
        lazy = cfg.loss == "wgan-gp" or step % cfg.penalty_every == 0
        # Only the real clips are augmented, as the DCGAN's real images (`gan.GANJob`): D
        # learns that a louder, later, noisier or slightly detuned note is still real, which
        # is what a real recording of it could be; what leaks into G stays plausible. Every
        # batch of the step draws from the step's one generator, in order.
        aug = self.augment.generator(step)
        for _ in range(cfg.d_steps - 1):  # extra critic updates on fresh batches (WGAN-GP)
            real, z, labels = self._batch()
            real = self.augment(real, aug)
            with torch.no_grad(), autocast(self.device, self.use_bf16):
                fake = g_run(z, *(() if labels is None else (labels,)))
            discriminator_step(gan, cfg, real, fake, labels, self.use_bf16, lazy)
        real, z, labels = self._batch()
        real = self.augment(real, aug)  # (B, 1, L) in [-1, 1]
        with autocast(self.device, self.use_bf16):
            fake = g_run(z, *(() if labels is None else (labels,)))  # (B, 1, L)
        loss_d, pen = discriminator_step(gan, cfg, real, fake, labels, self.use_bf16, lazy)
        loss_g = generator_step(gan, cfg, fake, labels, self.use_bf16)
        # penalty: 0 on the steps that skip it (lazy R1), so its logged mean is per step
        return {"loss_d": loss_d, "loss_g": loss_g, "penalty": pen}

    @torch.no_grad()
    def sample(self, n: int = MONITOR_CLIPS, seed: int = MONITOR_SEED) -> np.ndarray:
        """n clips (n, L) float32 from fixed latents (a conditional model: classes in turn)."""
        g = self.gan.generator
        was = g.training
        g.eval()
        z = torch.randn(n, self.model_cfg.z_dim, generator=torch.Generator().manual_seed(seed))
        cond = ()
        if self.model_cfg.num_classes:
            cond = (torch.arange(n, device=self.device) % self.model_cfg.num_classes,)
        out = g(z.to(self.device), *cond)[:, 0].float().cpu().numpy()
        g.train(was)
        return out

    def evaluate(self) -> dict[str, float]:
        return {} if self.monitor is None else dict(self.monitor(self.sample()))


def check_clips(clips: torch.Tensor, model_cfg: WaveGANConfig) -> None:
    if clips.ndim != 3 or tuple(clips.shape[1:]) != (1, model_cfg.length):
        raise ValueError(
            f"clips must be (N, 1, {model_cfg.length}) (the model's length), got "
            f"{tuple(clips.shape)}"
        )
    if not (clips.is_floating_point() or clips.dtype == torch.int16):
        raise ValueError(f"clips must be floats in [-1, 1] or int16 PCM, got {clips.dtype}")
    if len(clips) == 0:
        raise ValueError("no clips to train on")
