"""Scoring a character-level language model against its snapshot: what the evaluate stage logs
for the text families.

Held-out nats, bits per character and perplexity on the validation split, and distinct-1/2 and
novelty of samples drawn through the model's `TextGenerator` (as content batches and serving
draw them) from prompts cut from the held-out text. See `aigc_core.evaluation.text` for the
metrics' definitions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from aigc_core import progress
from aigc_core.data.snapshot import text_split
from aigc_core.evaluation.text import generation_metrics, heldout_nats, language_model_metrics
from aigc_core.families.base import EvalInputs, Evaluation
from aigc_core.generation.text import TextGenerator
from aigc_core.models.chars import encode

SAMPLE_SEED = 2024  # fixed: every candidate samples from the same seeds
TEXT_HELDOUT_CHARS = 50_000  # held-out characters scored
TEXT_SAMPLES, TEXT_SAMPLE_CHARS, TEXT_PROMPT_CHARS = 32, 200, 8
SAMPLES_TABLE = "text_samples.json"  # the samples as an MLflow table artifact

T = TypeVar("T")


def text_metrics(
    generator: TextGenerator, train_text: str, val_text: str
) -> tuple[dict[str, float], list[dict]]:
    """Held-out nats / bits per character / perplexity, and distinct-1/2 and novelty of
    samples drawn from prompts cut from the held-out text; and the samples, one row each
    (prompt, text, finish reason). Held-out characters outside the model's vocabulary (a warm
    start keeps its own) are dropped."""
    vocab = generator.vocab
    known = set(vocab)
    val = "".join(c for c in val_text if c in known)[:TEXT_HELDOUT_CHARS]
    model = generator.model
    nats = heldout_nats(model, encode(val, vocab), model.cfg.block_size)
    step = max(1, (len(val) - TEXT_PROMPT_CHARS) // TEXT_SAMPLES)
    prompts = [val[i : i + TEXT_PROMPT_CHARS] for i in range(0, step * TEXT_SAMPLES, step)]
    drawn = generator.generate(prompts, TEXT_SAMPLE_CHARS, seed=SAMPLE_SEED)
    samples = [text for text, _ in drawn]
    metrics = {
        **language_model_metrics(nats),
        **generation_metrics(samples, train_text),
        "heldout_chars": float(len(val)),
        "text_samples": float(len(samples)),
    }
    rows = [
        {"prompt": p, "text": text, "finish_reason": reason}
        for p, (text, reason) in zip(prompts, drawn, strict=True)
    ]
    return metrics, rows


def score_splits(inputs: EvalInputs, score: Callable[[str, str], T]) -> T:
    """`score(train_text, val_text)` on the snapshot of `inputs` (documents of a split joined
    by blank lines, as training joins them); reports progress as stage "evaluate", 1 step.
    The text families' and the sentence VAE's evaluations both score this way."""
    progress.report("evaluate", 0, 1)
    out = score(
        "\n\n".join(text_split(inputs.table, "train")),
        "\n\n".join(text_split(inputs.table, "validation")),
    )
    progress.report("evaluate", 1, 1)
    return out


def samples_summary(metrics: dict[str, float]) -> str:
    """The samples' part of a text evaluation's summary: distinct-2 and novelty."""
    return f"distinct-2 {metrics['distinct_2']:.3f}, novelty {metrics['novelty']:.3f}"


def evaluate_text(inputs: EvalInputs, generator: TextGenerator) -> Evaluation:
    """The text scores of `generator` on the snapshot of `inputs` (`score_splits`)."""
    metrics, samples = score_splits(inputs, functools.partial(text_metrics, generator))
    summary = (
        f"held-out {metrics['bits_per_char']:.4f} bits/char (perplexity "
        f"{metrics['perplexity']:.3f}), {samples_summary(metrics)}"
    )
    return Evaluation(metrics=metrics, summary=summary, tables={SAMPLES_TABLE: samples})
