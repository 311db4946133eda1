"""Scoring a sentence VAE against its snapshot: what the evaluate stage logs for the textvae
family.

On the validation split's sentences (cut as training cuts them, `aigc_core.training.textvae
.sentences`): the negative ELBO in nats per character (the gate's primary metric), the KL term
per sentence, the active latent units (Burda et al.) and the greedy reconstruction accuracy
(`heldout_scores`); on prior samples drawn through the model's generator (as content batches
draw them): distinct-1/2 and novelty (`aigc_core.evaluation.text`), and one interpolation path
between two held-out sentences, as tables.
"""

from __future__ import annotations

import functools

from aigc_core.evaluation.text import generation_metrics
from aigc_core.evaluation.text_eval import samples_summary, score_splits
from aigc_core.families.base import EvalInputs, Evaluation
from aigc_core.generation.textvae import TextVAEGenerator
from aigc_core.training.textvae import encode_batch, heldout_scores, sentences

SAMPLE_SEED = 2024  # fixed: every candidate samples from the same seeds
HELDOUT_SENTENCES = 2000
PRIOR_SAMPLES = 32
INTERPOLATION_STEPS = 5
SAMPLES_TABLE = "text_samples.json"
INTERPOLATION_TABLE = "interpolation.json"


def textvae_metrics(
    generator: TextVAEGenerator, train_text: str, val_text: str
) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """The scores (see the module docstring) and the tables: prior samples, one interpolation.
    Held-out sentences with characters outside the model's vocabulary are left out."""
    model = generator.model
    known = set(generator.vocab)
    val, _ = sentences(val_text, model.cfg.max_len)
    val = [s for s in val if set(s) <= known][:HELDOUT_SENTENCES]
    if len(val) < 2:
        raise ValueError(
            f"the validation split has {len(val)} sentences the model can read; the sentence "
            "VAE's scores need at least 2"
        )
    ids, lengths = encode_batch(val, generator.vocab)
    scores = heldout_scores(model, ids, lengths)
    drawn = generator.generate([""] * PRIOR_SAMPLES, model.cfg.max_len + 1, SAMPLE_SEED)
    samples = [t for t, _ in drawn]
    path = generator.interpolate(val[0], val[-1], INTERPOLATION_STEPS)
    metrics = {
        "neg_elbo_per_char": scores["neg_elbo"],
        "recon_nats_per_char": scores["recon_nats"],
        "kl": scores["kl"],
        "active_units": scores["active_units"],
        "recon_accuracy": scores["recon_accuracy"],
        "heldout_sentences": float(len(val)),
        **generation_metrics(samples, train_text),
        "text_samples": float(len(samples)),
    }
    tables = {
        SAMPLES_TABLE: [{"prompt": "", "text": t, "finish_reason": r} for t, r in drawn],
        INTERPOLATION_TABLE: [
            {"t": i / (INTERPOLATION_STEPS - 1), "text": t, "from": val[0], "to": val[-1]}
            for i, (t, _) in enumerate(path)
        ],
    }
    return metrics, tables


def evaluate_textvae(inputs: EvalInputs, generator: TextVAEGenerator) -> Evaluation:
    """The sentence VAE's scores on the snapshot of `inputs` (`score_splits`)."""
    metrics, tables = score_splits(inputs, functools.partial(textvae_metrics, generator))
    summary = (
        f"held-out -ELBO {metrics['neg_elbo_per_char']:.4f} nats/char, KL {metrics['kl']:.3f} "
        f"nats/sentence, {metrics['active_units']:.0f} active units, reconstruction "
        f"{metrics['recon_accuracy']:.3f}, {samples_summary(metrics)}"
    )
    return Evaluation(metrics=metrics, summary=summary, tables=tables)
