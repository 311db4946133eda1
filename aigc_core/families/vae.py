"""The VAE family: a convolutional variational autoencoder (`aigc_core.models.vae`).

It trains encoder and decoder (`aigc_core.training.vae`) and saves, serves and warm-starts the
decoder alone, `(B, z) -> images in [-1, 1]` like the DCGAN's generator. Its gate's primary
metric is the held-out negative ELBO the training job computed (the encoder is not served); its
evaluation adds held-out images beside their reconstructions by the full model of the run's
last checkpoint. The "*-conditional" presets train a conditional VAE (Sohn et al. 2015: the
encoder and the served decoder take labels), whose number of classes is the snapshot's. The
"cpu-augment" preset augments the training images (`aigc_core.training.augment`).
"""

from __future__ import annotations

import importlib

from aigc_core.families import images
from aigc_core.families.base import EvalInputs, Evaluation, Family, Preset
from aigc_core.models.io import config_fields
from aigc_core.models.vae import VAEConfig, VAEDecoder
from aigc_core.training.vae import VAEJob, VAETrainConfig

_PRESETS = {
    "smoke": Preset(
        VAEConfig(z_dim=8, width=8),
        VAETrainConfig(batch_size=32, steps=10, lr=2e-3, grad_clip=0.0, log_every=5),
    ),
    "cpu": Preset(
        VAEConfig(z_dim=16, width=32),
        VAETrainConfig(
            batch_size=128,
            steps=2000,
            lr=2e-3,
            warmup_steps=50,
            grad_clip=0.0,
            log_every=100,
            checkpoint_every=500,
        ),
    ),
    "gpu": Preset(
        VAEConfig(z_dim=32, width=64),
        VAETrainConfig(
            batch_size=256,
            steps=10000,
            lr=1e-3,
            warmup_steps=200,
            grad_clip=0.0,
            log_every=200,
            checkpoint_every=2000,
        ),
    ),
}
# smoke-conditional, cpu-conditional: the same with labels (a CVAE); cpu-augment: with the
# training images augmented
PRESETS = images.augmented_presets(images.conditional_presets(_PRESETS, ("smoke", "cpu")), ("cpu",))


def model_config(config: dict) -> VAEConfig:
    return VAEConfig(**config_fields(config))


def build_job(model_cfg: VAEConfig, train_cfg: VAETrainConfig, data, device) -> VAEJob:
    return VAEJob(
        data.need("images", "vae"),
        model_cfg,
        train_cfg,
        device,
        data.val_images,
        labels=data.labels,
        val_labels=data.val_labels,
    )


def _final_neg_elbo(final) -> float:
    # computed by the training job on the validation split: nats per image, fixed noise
    value = final.get("final_val_neg_elbo", final.get("val_neg_elbo"))
    if value is None:
        raise ValueError(
            "evaluate: the VAE's training result has no final_val_neg_elbo; the snapshot "
            "needs a non-empty validation split"
        )
    return float(value)


def train_config(config: dict) -> VAETrainConfig:
    return VAETrainConfig(**config)


def served_module(job):
    """The part of the job saved, served and warm-started."""
    return job.model.decoder


load_generator = images.generator_loader(VAEDecoder, model_config)
_image_scores = images.evaluator(load_generator)


def evaluate(inputs: EvalInputs) -> Evaluation:
    """The image scores, `neg_elbo` (the run's final held-out negative ELBO; `inputs.final`
    holds it as `final_val_neg_elbo`) and reconstructions.png."""
    neg_elbo = _final_neg_elbo(inputs.final)
    scores = _image_scores(inputs)
    # by name, as in `images.evaluator`: kept out of the code a served model carries
    recon = importlib.import_module("aigc_core.evaluation.reconstruction")
    sheet = recon.reconstructions_image(inputs.checkpoint_dir, inputs.table, model_config)
    return Evaluation(
        metrics={**scores.metrics, "neg_elbo": neg_elbo},
        images={"reconstructions.png": sheet, **scores.images},
        summary=f"{scores.summary}, neg_elbo {neg_elbo:.3f}",
    )


FAMILY = Family(
    name="vae",
    kind="image",
    presets=PRESETS,
    model_config=model_config,
    train_config=train_config,
    build_job=build_job,
    served_module=served_module,
    load_generator=load_generator,
    evaluate=evaluate,
    policy=images.gate("neg_elbo"),
    input_example=images.INPUT_EXAMPLE,
    params_example=images.PARAMS_EXAMPLE,
    prepare=images.classes("vae"),
    final_metrics={"final_loss": "loss", "final_val_neg_elbo": "val_neg_elbo"},
    description="convolutional variational autoencoder; serves its decoder",
)
