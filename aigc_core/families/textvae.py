"""The textvae family: a sentence-level VAE over characters (Bowman et al. 2016,
`aigc_core.models.textvae`).

Trained by `aigc_core.training.textvae` on the sentences of a text snapshot (paragraphs cut after
". ", "! ", "? ", whitespace collapsed, 8 to `max_len` characters); its vocabulary, the
characters of the training text, is stored in its config. Saved, served and warm-started whole:
the encoder serves prompts' and interpolations' posterior means. Generation
(`aigc_core.generation.textvae`): an empty prompt samples the prior, a prompt is teacher-forced
after a prior z and continued, an interpolation batch (`aigc generate --interpolate A B
--steps K`), or a served request with the params `interpolate_to` and `steps`, decodes points
between two posterior means.

The gate's primary metric is the held-out negative ELBO in nats per character (lower is
better); a collapsed posterior (no active unit, or a KL under 0.1 nats per sentence: the
decoder ignores z and the model is a language model with extra steps) is refused, as are
looping or reciting samples (the text families' distinct-2 and novelty floors).
"""

from __future__ import annotations

import importlib
import logging

from aigc_core.families import text
from aigc_core.families.base import EvalInputs, Evaluation, Family, Preset, TrainData
from aigc_core.generation.textvae import PREDICT_PARAMS, TextVAEGenerator
from aigc_core.models.io import CONFIG, WEIGHTS, config_fields, load_weights, read_config
from aigc_core.models.textvae import TextVAE, TextVAEConfig
from aigc_core.promotion import GatePolicy
from aigc_core.training.textvae import TextVAEJob, TextVAETrainConfig, sentences

log = logging.getLogger(__name__)

NAME = "textvae"
VAL_FRACTION = 0.1  # of the sentences, held out when the snapshot has no validation text

# the vocabulary is filled in from the training text (`prepare`); the cpu and gpu presets train
# against posterior collapse with word dropout and free bits
_AGAINST_COLLAPSE = dict(word_dropout=0.3, free_bits=0.05)
PRESETS = {
    "smoke": Preset(
        TextVAEConfig(vocab="", embed_dim=16, hidden=32, z_dim=8, max_len=48),
        TextVAETrainConfig(
            batch_size=16, steps=10, lr=3e-3, log_every=5, eval_batches=2, anneal_steps=1000
        ),
    ),
    "cpu": Preset(  # ~0.25 s a step on 2 shared cores (AMD EPYC Zen 5): ~2.5 minutes
        TextVAEConfig(vocab="", embed_dim=48, hidden=192, z_dim=16, max_len=64),
        TextVAETrainConfig(
            batch_size=32,
            steps=600,
            lr=3e-3,
            warmup_steps=20,
            log_every=100,
            checkpoint_every=200,
            kl_anneal="linear",
            anneal_steps=400,
            **_AGAINST_COLLAPSE,
        ),
    ),
    "gpu": Preset(
        TextVAEConfig(vocab="", embed_dim=128, hidden=512, z_dim=64, max_len=96),
        TextVAETrainConfig(
            batch_size=256,
            steps=10000,
            lr=1e-3,
            warmup_steps=200,
            log_every=200,
            checkpoint_every=2000,
            kl_anneal="sigmoid",
            anneal_steps=5000,
            **_AGAINST_COLLAPSE,
        ),
    ),
}

# Held-out negative ELBO per character. Floors: at least one active unit and 0.1 nats of KL
# per sentence (else the posterior collapsed: z carries nothing), and the language models'
# distinct-2 and novelty floors on prior samples.
GATE = GatePolicy(
    metric="neg_elbo_per_char",
    lower_is_better=True,
    min_improvement=0.0,
    minimums={"active_units": 1.0, "kl": 0.1, **text.GATE.minimums},
)


def model_config(config: dict) -> TextVAEConfig:
    return TextVAEConfig(**config_fields(config))


def train_config(config: dict) -> TextVAETrainConfig:
    return TextVAETrainConfig(**config)


def build_job(
    model_cfg: TextVAEConfig, train_cfg: TextVAETrainConfig, data: TrainData, device
) -> TextVAEJob:
    train, long = sentences(data.need("text", NAME), model_cfg.max_len)
    if data.val_text is not None:
        val, _ = sentences(data.val_text, model_cfg.max_len)
    else:
        cut = int(len(train) * (1 - VAL_FRACTION))
        train, val = train[:cut], train[cut:]
    if long:
        log.info("%d training sentences longer than max_len %d left out", long, model_cfg.max_len)
    return TextVAEJob(train, val, model_cfg, train_cfg, device)


def served_module(job: TextVAEJob):
    """Saved, served and warm-started whole: generation reads the encoder too."""
    return job.model


def load_generator(weights, config, device="cpu") -> TextVAEGenerator:
    module = TextVAE(model_config(read_config(config)))
    return TextVAEGenerator(load_weights(module, weights, device))


def evaluate(inputs: EvalInputs) -> Evaluation:
    # by name, as in `text.evaluate`: kept out of the code a served model carries
    scores = importlib.import_module("aigc_core.evaluation.textvae_eval")
    gen = load_generator(inputs.model_dir / WEIGHTS, inputs.model_dir / CONFIG)
    return scores.evaluate_textvae(inputs, gen)


FAMILY = Family(
    name=NAME,
    kind="text",
    presets=PRESETS,
    model_config=model_config,
    train_config=train_config,
    build_job=build_job,
    served_module=served_module,
    load_generator=load_generator,
    evaluate=evaluate,
    policy=GATE,
    input_example={"prompt": ["The "]},
    params_example=PREDICT_PARAMS,
    final_metrics={
        "final_loss": "loss",
        "final_kl": "kl",
        "final_val_neg_elbo": "val_neg_elbo",
        "final_val_active_units": "val_active_units",
    },
    prepare=text.vocabulary(NAME),
    description="sentence VAE (GRU encoder and decoder, KL annealing, word dropout); "
    "samples, continues and interpolates sentences",
)
