"""The charlstm family: a character-level LSTM language model (`aigc_core.models.charlstm`).

Trained by `aigc_core.training.lm` on a text snapshot; its vocabulary, the characters of the
training text, is stored in its config. Saved, served and warm-started whole.
"""

from __future__ import annotations

from aigc_core.families import text
from aigc_core.families.base import Preset
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
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


FAMILY = text.language_model(
    "charlstm", CharLSTM, CharLSTMConfig, PRESETS, "character-level LSTM language model"
)
