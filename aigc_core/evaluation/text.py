"""Text metrics for language models, as pure functions.

Held-out loss: the mean negative log-likelihood per token in nats (natural log), from logits and
targets. For character-level models a token is a character, so bits per character is
nats / ln 2 and perplexity is exp(nats) (per character). Models with other tokenizers must
convert to per-character figures before comparing bits per character across tokenizers.

distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
Models"), the convention used here: corpus level, over all generated texts together, the number
of distinct n-grams divided by the total number of n-grams; n-grams never cross text
boundaries; tokens are whitespace-separated words, lower-cased (`unit="char"` uses characters).
It lies in [0, 1]; 0 when there are no n-grams at all.

novelty: the share of the generated n-grams (same tokens, counted with multiplicity) that never
occur in the training text. Low novelty means the model copies its training text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch.nn import functional as F

LN2 = math.log(2.0)


def nll_nats(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> float:
    """Mean negative log-likelihood in nats per token. logits (..., V), targets (...)."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree: "
            "logits must be (..., vocab) over the targets' shape"
        )
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=ignore_index,
    )
    return float(loss)


@torch.no_grad()
def heldout_nats(model: torch.nn.Module, ids: torch.Tensor, block_size: int, batch: int = 64):
    """Mean nats per character of a language model over held-out ids (N,), scored on
    non-overlapping windows of `block_size` characters, each starting from an empty context
    (as training's validation does). `model(idx)[0]` must be logits (B, T, V)."""
    n_win = (len(ids) - 1) // block_size
    if n_win < 1:
        raise ValueError(
            f"held-out text has {len(ids)} characters; need more than block_size={block_size}"
        )
    x = ids[: n_win * block_size].view(n_win, block_size)  # (W, T)
    y = ids[1 : n_win * block_size + 1].view(n_win, block_size)  # (W, T) next characters
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, n_win, batch):
        logits = model(x[i : i + batch].to(device))[0]  # (b, T, V)
        total += nll_nats(logits.cpu(), y[i : i + batch]) * len(logits)
    return total / n_win


def bits_per_char(nats_per_char: float) -> float:
    return nats_per_char / LN2


def perplexity(nats_per_token: float) -> float:
    return math.exp(nats_per_token)


def language_model_metrics(nats_per_char: float) -> dict[str, float]:
    """The held-out figures the text families report and gate on."""
    if not math.isfinite(nats_per_char) or nats_per_char < 0:
        raise ValueError(
            f"held-out loss must be a finite, non-negative nats figure, got {nats_per_char}"
        )
    return {
        "heldout_nats": nats_per_char,
        "bits_per_char": bits_per_char(nats_per_char),
        "perplexity": perplexity(nats_per_char),
    }


def tokens(text: str, unit: str = "word") -> list[str]:
    if unit == "word":
        return text.lower().split()
    if unit == "char":
        return list(text)
    raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")


def ngrams(seq: Sequence[str], n: int) -> list[tuple[str, ...]]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(texts: Iterable[str], n: int, unit: str = "word") -> float:
    """Distinct n-grams / all n-grams over all texts (corpus level); 0.0 with no n-grams."""
    grams = [g for t in texts for g in ngrams(tokens(t, unit), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def novelty(generated: Iterable[str], training_text: str, n: int = 4, unit: str = "word") -> float:
    """Share of generated n-grams absent from the training text; 0.0 with no n-grams."""
    seen = set(ngrams(tokens(training_text, unit), n))
    grams = [g for t in generated for g in ngrams(tokens(t, unit), n)]
    if not grams:
        return 0.0
    return sum(g not in seen for g in grams) / len(grams)


def generation_metrics(
    generated: Sequence[str], training_text: str, novelty_n: int = 4
) -> dict[str, float]:
    """distinct-1/2 and novelty (of word `novelty_n`-grams) of a set of generated texts."""
    if not generated:
        raise ValueError("generated: need at least one text")
    return {
        "distinct_1": distinct_n(generated, 1),
        "distinct_2": distinct_n(generated, 2),
        "novelty": novelty(generated, training_text, novelty_n),
        "novelty_n": float(novelty_n),
    }
