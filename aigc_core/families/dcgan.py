"""The DCGAN family: an adversarially trained image generator (`aigc_core.models.dcgan`).

It trains the generator and discriminator together (`aigc_core.training.gan`) and saves, serves
and warm-starts the generator alone: `(B, z) -> images in [-1, 1]`. The "*-conditional" presets
train a class-conditional GAN (the generator takes `(z, labels)`), whose number of classes is
the snapshot's. The "cpu-augment" preset augments the real images the discriminator sees
(`aigc_core.training.augment`).
"""

from __future__ import annotations

from aigc_core.compression import pruning
from aigc_core.families import images
from aigc_core.families.base import Family, Preset
from aigc_core.models.dcgan import DCGANConfig, Generator
from aigc_core.models.io import config_fields
from aigc_core.training.gan import GANJob, GANTrainConfig

_PRESETS = {
    # seconds: for tests and CI
    "smoke": Preset(
        DCGANConfig(g_width=16, d_width=8),
        GANTrainConfig(batch_size=32, epochs=2, steps_per_epoch=5, lr=2e-4, beta1=0.5),
    ),
    # a few minutes on 2 CPU cores; samples read as digits
    "cpu": Preset(
        DCGANConfig(g_width=64, d_width=32),
        GANTrainConfig(batch_size=64, epochs=12, steps_per_epoch=250, lr=2e-4, beta1=0.5),
    ),
    # the seed's architecture on a GPU, a twentieth of its recipe: minutes
    "gpu": Preset(
        DCGANConfig(),
        GANTrainConfig(batch_size=128, epochs=10, steps_per_epoch=500, checkpoint_every=1000),
    ),
    # the seed's recipe: batch 128, Adam 1e-4, 100 epochs x 1000 steps; meant for a GPU
    "seed": Preset(DCGANConfig(), GANTrainConfig(checkpoint_every=5000)),
}
# smoke-conditional, cpu-conditional: the same with labels (Mirza & Osindero; a projection D);
# cpu-augment: with the real images the discriminator sees augmented
PRESETS = images.augmented_presets(images.conditional_presets(_PRESETS, ("smoke", "cpu")), ("cpu",))


def model_config(config: dict) -> DCGANConfig:
    return DCGANConfig(**config_fields(config))


def build_job(model_cfg: DCGANConfig, train_cfg: GANTrainConfig, data, device) -> GANJob:
    return GANJob(data.need("images", "dcgan"), model_cfg, train_cfg, device, data.labels)


def train_config(config: dict) -> GANTrainConfig:
    return GANTrainConfig(**config)


def served_module(job):
    """The part of the job saved, served and warm-started."""
    return job.gan.generator


load_generator = images.generator_loader(Generator, model_config)

FAMILY = Family(
    name="dcgan",
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
    params_example=images.PARAMS_EXAMPLE,
    prepare=images.classes("dcgan"),
    final_metrics={"final_loss_g": "loss_g", "final_loss_d": "loss_d"},
    # half the generator's channels pruned, then distilled from the parent: 2.0x the images/s
    # (3.0x capped at AVX2) with FID 2-3% above the parent's (benchmarks/compress.py)
    compression=pruning.dcgan_channels(load_generator, tolerance=0.10),
    description="DCGAN: convolutional generator and discriminator trained adversarially",
)
