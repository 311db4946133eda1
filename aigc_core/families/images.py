"""Building blocks of image families: what any generator `(B, z) -> images in [-1, 1]` with
`cfg.z_dim` can share (the DCGAN and the VAE's decoder use them; so can a plugin).

- `generator_loader(build, model_config)`: `load_generator` for a family whose served module is
  `build(model_config(saved config dict))`;
- `evaluator(load_generator)`: `evaluate`, the image scores (`aigc_core.evaluation.image_eval`);
- `GATE` / `gate(metric)`: the standard promotion gate (FID, or another primary metric, with the
  evaluator-accuracy floor and the memorization ceiling);
- `INPUT_EXAMPLE`, `PARAMS_EXAMPLE`: the pyfunc request logged with the model and its params
  (`labels`, the classes asked of a conditional model, `aigc_core.generation.labels`);
- `classes(name)`: `prepare` of a family whose config has `conditional` and `num_classes`;
  `conditional_presets(presets)`: "<name>-conditional" variants of some presets;
  `augmented_presets(presets)`: "<name>-augment" variants (the train config's `augment` on).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aigc_core.families.base import EvalInputs, Evaluation, Preset, TrainData
from aigc_core.generation.images import ImageGenerator
from aigc_core.models.io import CONFIG, WEIGHTS, load_weights, read_config
from aigc_core.promotion import GatePolicy

INPUT_EXAMPLE = {"n": [2], "seed": [0]}
# "": no labels asked (a conditional model spreads its images over its classes)
PARAMS_EXAMPLE = {"labels": ""}

# FID in the evaluator's feature space. Floors: an evaluator below 90% held-out accuracy makes
# FID meaningless; a generator copying more than 5% of its samples from training data is rejected.
GATE = GatePolicy(
    metric="fid",
    lower_is_better=True,
    min_improvement=0.0,
    minimums={"evaluator_accuracy": 0.9},
    maximums={"memorization_rate": 0.05},
)


def gate(metric: str, lower_is_better: bool = True) -> GatePolicy:
    """The standard image gate with another primary metric (its floors kept)."""
    return dataclasses.replace(GATE, metric=metric, lower_is_better=lower_is_better)


def conditional_presets(presets: dict[str, Preset], names: tuple[str, ...]) -> dict:
    """`presets` followed by a "<name>-conditional" variant of each of `names`: the same
    settings with the model config's `conditional` on."""
    out = dict(presets)
    for name in names:
        model = dataclasses.replace(presets[name].model, conditional=True)
        out[f"{name}-conditional"] = Preset(model, presets[name].train)
    return out


def augmented_presets(presets: dict[str, Preset], names: tuple[str, ...]) -> dict:
    """`presets` followed by a "<name>-augment" variant of each of `names`: the same settings
    with the train config's augmentation on (`aigc_core.training.augment`, or `augment_audio`
    for an audio trainer: its defaults)."""
    out = dict(presets)
    for name in names:
        train = presets[name].train
        augment = dataclasses.replace(train.augment, enabled=True)
        out[f"{name}-augment"] = Preset(
            presets[name].model, dataclasses.replace(train, augment=augment)
        )
    return out


def classes(name: str) -> Callable[[Any, TrainData], Any]:
    """`prepare` of the image family `name`: a conditional config gets the snapshot's number
    of classes as `num_classes`; an unconditional one stays as it is."""
    return functools.partial(prepare_classes, name)


def prepare_classes(name: str, model_cfg, data: TrainData):
    if not model_cfg.conditional:
        return model_cfg
    k = data.num_classes
    if k < 2:
        raise ValueError(
            f"a conditional {name} model learns one image distribution per class, but this "
            f"snapshot has {k} class{'es' if k != 1 else ''}: ingest labelled images (an image "
            "folder with one subfolder per class) or choose an unconditional preset"
        )
    if model_cfg.num_classes and model_cfg.num_classes != k:  # a warm start's own classes
        raise ValueError(
            f"the {name} model was trained on {model_cfg.num_classes} classes, this snapshot "
            f"has {k}: warm-start it on a snapshot with the same classes"
        )
    return dataclasses.replace(model_cfg, num_classes=k)


def generator_loader(
    build: Callable[[Any], nn.Module], model_config: Callable[[dict], Any]
) -> Callable[..., ImageGenerator]:
    """`load_generator(weights, config, device="cpu")` for a family whose saved module is
    `build(model_config(config dict))`. (Partials of module functions, here and below: a
    family stays picklable.)"""
    return functools.partial(load_generator, build, model_config)


def load_generator(
    build: Callable[[Any], nn.Module],
    model_config: Callable[[dict], Any],
    weights: Path,
    config: Path,
    device: str | torch.device = "cpu",
) -> ImageGenerator:
    module = build(model_config(read_config(config)))
    return ImageGenerator(load_weights(module, weights, device))


def evaluator(
    load_generator: Callable[..., ImageGenerator],
) -> Callable[[EvalInputs], Evaluation]:
    """`evaluate` scoring the saved generator with the image metrics."""
    return functools.partial(evaluate, load_generator)


def evaluate(load_generator: Callable[..., ImageGenerator], inputs: EvalInputs) -> Evaluation:
    # Imported by name when a model is evaluated: a served model's code is gathered from
    # static imports (aigc_core.serving.environment), and serving never evaluates, so the
    # evaluation stack (torchmetrics, pyarrow) stays out of its requirements.
    scores = importlib.import_module("aigc_core.evaluation.image_eval")
    gen = load_generator(inputs.model_dir / WEIGHTS, inputs.model_dir / CONFIG)
    return scores.evaluate_images(inputs, gen)
