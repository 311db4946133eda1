"""Building blocks of text families: what any character-level language model `(ids (B, T)) ->
(logits (B, T, V), ...)` with `cfg.vocab` and `cfg.block_size` can share (the LSTM and the
Transformer use them; so can a plugin).

- `vocabulary(name)`: `prepare`, filling an empty `vocab` from the training text;
- `lm_job(name)`: `build_job` for `aigc_core.training.lm.LMJob`;
- `generator_loader(build, model_config)`: `load_generator` returning a `TextGenerator`;
- `evaluator(load_generator)`: `evaluate`, the text scores (`aigc_core.evaluation.text_eval`);
- `GATE`, `FINAL_METRICS`, `INPUT_EXAMPLE`, `PARAMS_EXAMPLE` (the served request: prompts as
  rows, sampling options as params);
- `COMPRESSION_TOLERANCE`: how much worse (relative) a compressed model's bits per character
  may be than its parent's;
- `language_model(name, module, config_class, presets, description)`: all of it as one `Family`,
  compressed by dynamic int8 quantization (`aigc_core.compression.int8`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aigc_core.compression import int8
from aigc_core.families.base import EvalInputs, Evaluation, Family, TrainData
from aigc_core.generation.text import TextGenerator
from aigc_core.generation.text_options import PREDICT_PARAMS
from aigc_core.models.io import CONFIG, WEIGHTS, config_fields, load_weights, read_config
from aigc_core.promotion import GatePolicy
from aigc_core.training import lm
from aigc_core.training.loop import TrainConfig

INPUT_EXAMPLE = {"prompt": ["The "]}
# temperature, top_k, top_p, max_new_tokens, stop (a list of strings) and seed, with the
# defaults `TextGenerator.predict` applies: MLflow serves those a request leaves out
PARAMS_EXAMPLE = PREDICT_PARAMS

# Held-out bits per character. Floors: a language model whose bigrams are under 20% distinct is
# looping, and one with under 10% novel word 4-grams is reciting its training text.
GATE = GatePolicy(
    metric="bits_per_char",
    lower_is_better=True,
    min_improvement=0.0,
    minimums={"distinct_2": 0.2, "novelty": 0.1},
)

# int8 weights cost the charlstm cpu preset 0.04% in held-out bits per character
# (benchmarks/compress.py): 2% leaves room for noise and still refuses a broken model
COMPRESSION_TOLERANCE = 0.02

FINAL_METRICS = {"final_loss": "loss", "final_val_loss": "val_loss", "final_val_bpc": "val_bpc"}


def vocabulary(name: str) -> Callable[[Any, TrainData], Any]:
    """`prepare` of the text family `name`: a config without a vocabulary gets the one of the
    training and validation text (a warm start's config keeps its own). (Partials of module
    functions, here and below: a family stays picklable.)"""
    return functools.partial(prepare_vocabulary, name)


def prepare_vocabulary(name: str, model_cfg, data: TrainData):
    if model_cfg.vocab:
        return model_cfg
    vocab, _, _ = lm.prepare_text(data.need("text", name), data.val_text)
    return lm.with_vocab(model_cfg, vocab)


def lm_job(name: str) -> Callable[..., lm.LMJob]:
    """`build_job` of the text family `name`: the text as token ids of the config's vocabulary
    (the last tenth held out when the snapshot has no validation text)."""
    return functools.partial(build_lm_job, name)


def build_lm_job(name: str, model_cfg, train_cfg, data: TrainData, device: torch.device):
    text = data.need("text", name)
    _, train_ids, val_ids = lm.prepare_text(text, data.val_text, vocab=model_cfg.vocab)
    return lm.LMJob(train_ids, val_ids, model_cfg, train_cfg, device)


def generator_loader(
    build: Callable[[Any], nn.Module], model_config: Callable[[dict], Any]
) -> Callable[..., TextGenerator]:
    """`load_generator(weights, config, device="cpu")` for a family whose saved module is
    `build(model_config(config dict))`."""
    return functools.partial(load_generator, build, model_config)


def load_generator(
    build: Callable[[Any], nn.Module],
    model_config: Callable[[dict], Any],
    weights: Path,
    config: Path,
    device: str | torch.device = "cpu",
) -> TextGenerator:
    module = build(model_config(read_config(config)))
    return TextGenerator(load_weights(module, weights, device))


def evaluator(
    load_generator: Callable[..., TextGenerator],
) -> Callable[[EvalInputs], Evaluation]:
    """`evaluate` scoring the saved language model with the text metrics."""
    return functools.partial(evaluate, load_generator)


def evaluate(load_generator: Callable[..., TextGenerator], inputs: EvalInputs) -> Evaluation:
    # Imported by name, as in `aigc_core.families.images.evaluate`: kept out of the code a
    # served model carries.
    scores = importlib.import_module("aigc_core.evaluation.text_eval")
    gen = load_generator(inputs.model_dir / WEIGHTS, inputs.model_dir / CONFIG)
    return scores.evaluate_text(inputs, gen)


def language_model(
    name: str,
    module: Callable[[Any], nn.Module],
    config_class: type,
    presets: dict,
    description: str,
) -> Family:
    """A character-level language model family: its network (`module(config)`), config class
    and presets are its own; training (`LMJob`), the vocabulary step, generation, evaluation,
    the gate, the served request and the compression are this module's."""
    model_config = functools.partial(saved_config, config_class)
    load = generator_loader(module, model_config)
    return Family(
        name=name,
        kind="text",
        presets=presets,
        model_config=model_config,
        train_config=train_config,
        build_job=lm_job(name),
        served_module=served_model,
        load_generator=load,
        evaluate=evaluator(load),
        policy=GATE,
        input_example=INPUT_EXAMPLE,
        params_example=PARAMS_EXAMPLE,
        final_metrics=FINAL_METRICS,
        prepare=vocabulary(name),
        description=description,
        compression=int8.dynamic_int8(load, COMPRESSION_TOLERANCE),
    )


def saved_config(config_class: type, config: dict):
    """The model config of a saved or checkpointed config dict."""
    return config_class(**config_fields(config))


def train_config(config: dict) -> TrainConfig:
    return TrainConfig(**config)


def served_model(job: lm.LMJob) -> nn.Module:
    """A language model is saved, served and warm-started whole."""
    return job.model
