"""The transformer family: a character-level decoder-only Transformer language model
(`aigc_core.models.transformer`).

Trained by `aigc_core.training.lm` on a text snapshot; its vocabulary, the characters of the
training text, is stored in its config. Saved, served and warm-started whole.
"""

from __future__ import annotations

from aigc_core.families import text
from aigc_core.families.base import Preset
from aigc_core.models.transformer import TransformerConfig, TransformerLM
from aigc_core.training.loop import TrainConfig

# the vocabulary is filled in from the training text (`prepare`)
PRESETS = {
    "smoke": Preset(
        TransformerConfig(
            vocab="", block_size=16, n_layer=1, n_head=2, n_embd=16, positions="rotary"
        ),
        TrainConfig(batch_size=8, steps=10, lr=3e-3, log_every=5, eval_batches=2),
    ),
    "cpu": Preset(
        # a 256-character context: the key/value cache decodes 200 new characters without
        # leaving it (with 64, every character past it re-ran the whole window: 1.4x the
        # uncached loop, against 24x now; benchmarks/generate_text_throughput.py). Batches of 8
        # windows keep the 2,048 characters a step of 32 x 64 had. Rotary positions: learned
        # ones for 256 positions trained to 1.72 nats/char in these 1,500 steps (1.38 at 64
        # characters), rotary ones to 1.30 (benchmarks/lm_convergence.py)
        TransformerConfig(
            vocab="",
            block_size=256,
            n_layer=4,
            n_head=4,
            n_embd=128,
            dropout=0.0,
            positions="rotary",
        ),
        TrainConfig(  # 3 minutes on 2 cores (benchmarks/lm_convergence.py: 195 s)
            batch_size=8,
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


FAMILY = text.language_model(
    "transformer",
    TransformerLM,
    TransformerConfig,
    PRESETS,
    "character-level decoder-only Transformer language model",
)
