"""Building blocks of image families: what any generator `(B, z) -> images in [-1, 1]` with
`cfg.z_dim` can share (the DCGAN and the VAE's decoder use them; so can a plugin).

- `generator_loader(build, model_config)`: `load_generator` for a family whose served module is
  `build(model_config(saved config dict))`;
- `evaluator(load_generator)`: `evaluate`, the image scores (`aigc_core.evaluation.image_eval`);
- `GATE` / `gate(metric)`: the standard promotion gate (FID, or another primary metric, with the
  evaluator-accuracy floor and the memorization ceiling);
- `INPUT_EXAMPLE`: the pyfunc request logged with the model.
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

from aigc_core.families.base import EvalInputs, Evaluation
from aigc_core.generation.images import ImageGenerator
from aigc_core.models.io import CONFIG, WEIGHTS, load_weights, read_config
from aigc_core.promotion import GatePolicy

INPUT_EXAMPLE = {"n": [2], "seed": [0]}

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
