"""Character vocabulary shared by the character-level language models.

The vocabulary is the sorted set of characters of the training text; it is stored in the model's
config (a plain string), so a saved model rebuilds its own tokenizer.
"""

from __future__ import annotations

import torch


def build_vocab(text: str) -> str:
    """Sorted distinct characters of `text`."""
    if not text:
        raise ValueError("cannot build a vocabulary from empty text")
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> torch.Tensor:
    """(N,) int64 token ids; characters outside `vocab` are an error that names them."""
    index = {c: i for i, c in enumerate(vocab)}
    try:
        return torch.tensor([index[c] for c in text], dtype=torch.long)
    except KeyError:
        unknown = sorted(set(text) - set(vocab))[:10]
        raise ValueError(
            f"text has characters outside the model's vocabulary: {unknown!r}; "
            "remove them or retrain on text that contains them"
        ) from None


def decode(ids: torch.Tensor | list[int], vocab: str) -> str:
    return "".join(vocab[i] for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids))
