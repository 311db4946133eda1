"""The diffusion family: a class-conditional denoising diffusion model on diffusers' parts
(`aigc_core.models.diffusion`: a `UNet2DModel` noise predictor).

It trains with `DDPMScheduler.add_noise` and an epsilon-prediction loss, labels dropped to a
"no label" class for classifier-free guidance, and keeps a moving average of the weights
(`aigc_core.training.diffusion`); the averaged network is saved, served and warm-started. Images
are sampled by diffusers' DDIM or DPM-Solver++ schedulers with guidance
(`aigc_core.generation.diffusion`); requests may set `guidance` and `sampling_steps` beside
`labels`. The model is conditional when `model.conditional` is on (the default) and the
snapshot has two classes or more; on a one-class snapshot it trains unconditional.
"""

from __future__ import annotations

import dataclasses
import logging

from aigc_core.families import images
from aigc_core.families.base import Family, Preset, TrainData, classes_if_labelled
from aigc_core.generation.diffusion import load_generator
from aigc_core.models.diffusion import DiffusionConfig
from aigc_core.models.io import config_fields
from aigc_core.training.diffusion import DiffusionJob, DiffusionTrainConfig

log = logging.getLogger(__name__)

_PRESETS = {
    # seconds: for tests and CI. One guided sampling step (2 forwards per image): 5,000
    # evaluation images took 39 s with 2 steps on a loaded 2-core machine
    "smoke": Preset(
        DiffusionConfig(block_out_channels=(8, 16), norm_groups=4, sampling_steps=1),
        DiffusionTrainConfig(batch_size=32, steps=10, lr=2e-3, warmup_steps=0, log_every=5),
    ),
    # ~7 minutes on 2 CPU cores for 28x28 digits (from its s/step). Narrower and with smaller
    # batches than (32, 64, 64) x 64: given the same 300 s on one core, FID 35.8 against 42.6
    # on digits (benchmarks/fid_equal_time.py), and a third of the cost per sampled image.
    # Sampling: one model trained 300 s scored FID 27.3 / 18.2 / 19.9 at guidance 1 / 1.5 / 2
    # with 10 DPM-Solver++ steps, and 15.5 / 18.5 at guidance 1.5 / 2 with 20 steps
    "cpu": Preset(
        DiffusionConfig(block_out_channels=(16, 32, 64), sampling_steps=20, guidance=1.5),
        DiffusionTrainConfig(
            batch_size=32,
            steps=2000,
            lr=3e-3,
            warmup_steps=50,
            ema_decay=0.995,
            log_every=100,
            checkpoint_every=500,
        ),
    ),
    # a GPU: a wider UNet with attention at the lowest resolution, minutes
    "gpu": Preset(
        DiffusionConfig(
            block_out_channels=(64, 128, 128), layers_per_block=2, attention=True, norm_groups=32
        ),
        DiffusionTrainConfig(
            batch_size=128,
            steps=20000,
            lr=1e-3,
            warmup_steps=500,
            ema_decay=0.999,
            log_every=500,
            checkpoint_every=5000,
        ),
    ),
}
# cpu-augment: the cpu preset with the clean training images augmented
PRESETS = images.augmented_presets(_PRESETS, ("cpu",))


def model_config(config: dict) -> DiffusionConfig:
    return DiffusionConfig(**config_fields(config))


def train_config(config: dict) -> DiffusionTrainConfig:
    return DiffusionTrainConfig(**config)


def prepare(model_cfg: DiffusionConfig, data: TrainData) -> DiffusionConfig:
    """A conditional config gets the snapshot's number of classes; with fewer than two classes
    there is nothing to condition on, so the model trains unconditional (num_classes 0; and
    says so). `conditional` itself stays the user's setting, so the settings' digest is the
    same before and after."""
    return dataclasses.replace(
        model_cfg, num_classes=classes_if_labelled(model_cfg, data, "diffusion")
    )


def build_job(
    model_cfg: DiffusionConfig, train_cfg: DiffusionTrainConfig, data: TrainData, device
) -> DiffusionJob:
    return DiffusionJob(
        data.need("images", "diffusion"),
        model_cfg,
        train_cfg,
        device,
        labels=data.labels,
        val_images=data.val_images,
        val_labels=data.val_labels,
    )


def served_module(job: DiffusionJob):
    """The part of the job saved, served and warm-started: the averaged network."""
    return job.ema_module()


FAMILY = Family(
    name="diffusion",
    kind="image",
    presets=PRESETS,
    model_config=model_config,
    train_config=train_config,
    build_job=build_job,
    served_module=served_module,
    load_generator=load_generator,
    evaluate=images.evaluator(load_generator),
    policy=images.GATE,
    input_example=images.INPUT_EXAMPLE,
    # a negative guidance and 0 steps: the model's defaults (its config's)
    params_example={"labels": "", "guidance": -1.0, "sampling_steps": 0},
    prepare=prepare,
    final_metrics={"final_loss": "loss", "final_val_loss": "val_loss"},
    description=(
        "denoising diffusion (diffusers UNet2DModel, DDIM / DPM-Solver++ sampling), "
        "class-conditional with classifier-free guidance; serves its EMA weights"
    ),
)
