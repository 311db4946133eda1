"""The transformer family: a character-level decoder-only Transformer language model
(`aigc_core.models.transformer`).

Trained by `aigc_core.training.lm` on a text snapshot; its vocabulary, the characters of the
training text, is stored in its config. Saved, served and warm-started whole.
"""

from __future__ import annotations

from aigc_core.families import text
from aigc_core.families.base import Family, Preset
from aigc_core.models.io import config_fields
from aigc_core.models.transformer import TransformerConfig, TransformerLM
from aigc_core.training.loop import TrainConfig

# the vocabulary is filled in from the training text (`prepare`)
PRESETS = {
    "smoke": Preset(
        TransformerConfig(vocab="", block_size=16, n_layer=1, n_head=2, n_embd=16),
        TrainConfig(batch_size=8, steps=10, lr=3e-3, log_every=5, eval_batches=2),
    ),
    "cpu": Preset(
        TransformerConfig(vocab="", block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0),
        TrainConfig(  # 2 minutes on 2 cores (benchmarks/lm_convergence.py)
            batch_size=32,
            steps=1500,
            lr=2e-3,
            warmup_steps=50,
            weight_decay=0.1,
            log_every=100,
            eval_batches=8,
            checkpoint_every=500,
        ),
    ),
    "gpu": Preset(
        TransformerConfig(vocab="", block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
        TrainConfig(
            batch_size=64,
            steps=5000,
            lr=1e-3,
            warmup_steps=200,
            weight_decay=0.1,
            log_every=100,
            eval_batches=20,
            checkpoint_every=1000,
        ),
    ),
}


def model_config(config: dict) -> TransformerConfig:
    return TransformerConfig(**config_fields(config))


def train_config(config: dict) -> TrainConfig:
    return TrainConfig(**config)


def served_module(job):
    """The part of the job saved, served and warm-started."""
    return job.model


load_generator = text.generator_loader(TransformerLM, model_config)

FAMILY = Family(
    name="transformer",
    kind="text",
    presets=PRESETS,
    model_config=model_config,
    train_config=train_config,
    build_job=text.lm_job("transformer"),
    served_module=served_module,
    load_generator=load_generator,
    evaluate=text.evaluator(load_generator),
    policy=text.GATE,
    input_example=text.INPUT_EXAMPLE,
    final_metrics=text.FINAL_METRICS,
    prepare=text.vocabulary("transformer"),
    description="character-level decoder-only Transformer language model",
)
