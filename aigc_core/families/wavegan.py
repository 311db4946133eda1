"""The WaveGAN family: an adversarially trained waveform generator (`aigc_core.models.wavegan`).

It trains the generator and discriminator together (`aigc_core.training.wavegan`) and saves,
serves and warm-starts the generator alone: `(B, z) -> (B, 1, L)` in [-1, 1]. Its clip length
and sample rate are the snapshot's (`prepare`), so a saved model writes its WAV files at the rate
it learned. As the diffusion family, it is class-conditional when the snapshot has two classes
or more; a one-class or unlabelled folder trains an unconditional model, and
`--set model.conditional=false` asks for one on any data. Its content is audio: the served
pyfunc answers base64 WAV rows (`aigc_core.generation.audio.AudioGenerator`) and the evaluator
is the per-snapshot audio classifier (`aigc_core.evaluation.audio_eval`: FAD, recognition,
memorization).

The "cpu-augment" preset is `cpu` with the real clips the discriminator sees augmented (random
gain, time shift and noise; pitch shift stays off, as on pitch-labelled data it changes the
label: `aigc_core.training.augment_audio`).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import torch

from aigc_core.families import images
from aigc_core.families.base import (
    EvalInputs,
    Evaluation,
    Family,
    Preset,
    TrainData,
    classes_if_labelled,
)
from aigc_core.generation import audio as audio_generation
from aigc_core.models.io import CONFIG, WEIGHTS, config_fields, read_config
from aigc_core.models.wavegan import WaveGANConfig, upsampling_layers
from aigc_core.promotion import GatePolicy
from aigc_core.training.wavegan import WaveGANJob, WaveGANTrainConfig

# length, sample_rate and num_classes are filled in from the snapshot (`prepare`); the values
# here are the built-in `notes` set's (8 kHz, 4096 samples), which the presets were sized on
_NOTES = dict(length=4096, sample_rate=8000)
_PRESETS = {
    # seconds: tests and CI
    "smoke": Preset(
        WaveGANConfig(z_dim=16, width=4, kernel=9, **_NOTES),
        WaveGANTrainConfig(batch_size=8, steps=6, log_every=3),
    ),
    # about 9 minutes for `aigc run` on 2 CPU cores (~0.15 s a step, AMD EPYC Zen 5, bf16):
    # the paper's kernel 25 at half its width, the cheaper loss. Width 16 with kernel 9 made
    # broadband clips at one pitch (none recognized after 3,800 steps). On `notes` it reached
    # FAD 118 (floor 3.7) with 70% of clips recognized, 97% of them as the class asked; trained
    # unconditional (model.conditional=false), FAD 202 and 7% recognized (README, "Audio
    # generation")
    "cpu": Preset(
        WaveGANConfig(width=32, kernel=25, **_NOTES),
        WaveGANTrainConfig(
            batch_size=32, steps=3000, log_every=250, lr=2e-4, penalty=1.0, checkpoint_every=1000
        ),
    ),
    # the paper's model and loss (d=64, kernel 25, WGAN-GP, 5 critic steps); meant for a GPU
    "gpu": Preset(
        WaveGANConfig(**_NOTES),
        WaveGANTrainConfig(
            batch_size=64,
            steps=20000,
            log_every=500,
            loss="wgan-gp",
            d_steps=5,
            penalty=10.0,
            checkpoint_every=2000,
        ),
    ),
}

# cpu-augment: with the real clips the discriminator sees augmented (the generic image helper
# turns any train config's `augment.enabled` on)
PRESETS = images.augmented_presets(_PRESETS, ("cpu",))

# FAD in the audio evaluator's feature space, with the image gate's evaluator floor (below 90%
# held-out accuracy its features mean little) and a looser memorization ceiling: the evaluator's
# features gather a class's clips tightly, so a faithful generator's share of clips closer to a
# training clip than the 1st percentile of held-out ones can pass 5% by chance
GATE = GatePolicy(
    metric="fad",
    lower_is_better=True,
    min_improvement=0.0,
    minimums={"evaluator_accuracy": 0.9},
    maximums={"memorization_rate": 0.10},
)


def model_config(config: dict) -> WaveGANConfig:
    return WaveGANConfig(**config_fields(config))


def train_config(config: dict) -> WaveGANTrainConfig:
    return WaveGANTrainConfig(**config)


def prepare(model_cfg: WaveGANConfig, data: TrainData) -> WaveGANConfig:
    """The snapshot's clip length and sample rate, and a conditional model's classes."""
    clips = data.need("audio", "wavegan")
    length = int(clips.shape[-1])
    try:
        upsampling_layers(length)
    except ValueError:
        raise ValueError(
            f"the wavegan family makes clips of 16 * 4**k samples; this snapshot's are {length}: "
            "ingest the recordings again with `aigc ingest --clip-samples N`, N one of 1024, "
            "4096, 16384, 65536"
        ) from None
    if data.sample_rate < 1:
        raise ValueError("the wavegan family needs the clips' sample rate; this data has none")
    k = classes_if_labelled(model_cfg, data, "wavegan")
    changes = {"length": length, "sample_rate": int(data.sample_rate), "num_classes": k}
    return dataclasses.replace(model_cfg, **changes)


def build_job(
    model_cfg: WaveGANConfig, train_cfg: WaveGANTrainConfig, data: TrainData, device
) -> WaveGANJob:
    return WaveGANJob(data.need("audio", "wavegan"), model_cfg, train_cfg, device, data.labels)


def served_module(job: WaveGANJob):
    """The part of the job saved, served and warm-started."""
    return job.gan.generator


def load_generator(
    weights: Path, config: Path, device: str | torch.device = "cpu"
) -> audio_generation.AudioGenerator:
    return audio_generation.load_generator(weights, read_config(config), device)


def evaluate(inputs: EvalInputs) -> Evaluation:
    # by name, as the image families do (`families.images.evaluate`): a served model never
    # evaluates, so the evaluation stack stays out of its code and requirements
    scores = importlib.import_module("aigc_core.evaluation.audio_eval")
    gen = load_generator(inputs.model_dir / WEIGHTS, inputs.model_dir / CONFIG)
    return scores.evaluate_audio(inputs, gen)


FAMILY = Family(
    name="wavegan",
    kind="audio",
    presets=PRESETS,
    model_config=model_config,
    train_config=train_config,
    build_job=build_job,
    served_module=served_module,
    load_generator=load_generator,
    evaluate=evaluate,
    policy=GATE,
    # the image families' request: n clips from a seed, `labels` for a conditional model
    input_example=images.INPUT_EXAMPLE,
    params_example=images.PARAMS_EXAMPLE,
    prepare=prepare,
    final_metrics={"final_loss_g": "loss_g", "final_loss_d": "loss_d"},
    description="WaveGAN: 1-D convolutional generator and phase-shuffle discriminator on raw audio",
)
