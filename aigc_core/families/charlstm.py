"""The charlstm family: a character-level LSTM language model (`aigc_core.models.charlstm`).

Trained by `aigc_core.training.lm` on a text snapshot; its vocabulary, the characters of the
training text, is stored in its config. Saved, served and warm-started whole.
"""

from __future__ import annotations

from aigc_core.families import text
from aigc_core.families.base import Family, Preset
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.io import config_fields
from aigc_core.training.loop import TrainConfig

# the vocabulary is filled in from the training text (`prepare`)
PRESETS = {
    "smoke": Preset(
        CharLSTMConfig(vocab="", embed_dim=16, hidden=32, block_size=16),
        TrainConfig(batch_size=8, steps=10, lr=3e-3, log_every=5, eval_batches=2),
    ),
    "cpu": Preset(
        CharLSTMConfig(vocab="", embed_dim=64, hidden=256, block_size=64, dropout=0.1),
        TrainConfig(  # 1.5 minutes on 2 cores (benchmarks/lm_convergence.py)
            batch_size=32,
            steps=1500,
            lr=4e-3,
            warmup_steps=20,
            log_every=100,
            eval_batches=8,
            checkpoint_every=500,
        ),
    ),
    "gpu": Preset(
        CharLSTMConfig(vocab="", embed_dim=128, hidden=512, block_size=128),
        TrainConfig(
            batch_size=128,
            steps=5000,
            lr=2e-3,
            warmup_steps=100,
            log_every=100,
            eval_batches=20,
            checkpoint_every=1000,
        ),
    ),
}


def model_config(config: dict) -> CharLSTMConfig:
    return CharLSTMConfig(**config_fields(config))


def train_config(config: dict) -> TrainConfig:
    return TrainConfig(**config)


def served_module(job):
    """The part of the job saved, served and warm-started."""
    return job.model


load_generator = text.generator_loader(CharLSTM, model_config)

FAMILY = Family(
    name="charlstm",
    kind="text",
    presets=PRESETS,
    model_config=model_config,
    train_config=train_config,
    build_job=text.lm_job("charlstm"),
    served_module=served_module,
    load_generator=load_generator,
    evaluate=text.evaluator(load_generator),
    policy=text.GATE,
    input_example=text.INPUT_EXAMPLE,
    final_metrics=text.FINAL_METRICS,
    prepare=text.vocabulary("charlstm"),
    description="character-level LSTM language model",
)
