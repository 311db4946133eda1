"""Token samplers for the language models: tensor in, tensor out; the models never import them.

`next_token` turns last-position logits into the next ids with temperature and top-k, drawing
from an explicit torch.Generator so that the same seed gives the same text.
"""

from __future__ import annotations

import functools

import torch


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) -> token ids (B, 1). temperature 0 means greedy (argmax)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    # draw on the generator's device (CPU), so results do not depend on the model's device
    ids = torch.multinomial(probs.cpu(), 1, generator=generator)  # (B, 1)
    return ids.to(logits.device)


def picker(temperature: float = 1.0, top_k: int | None = None, seed: int | None = None):
    """A `pick` function for the models' generate(): logits (B, V) -> ids (B, 1)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return functools.partial(next_token, temperature=temperature, top_k=top_k, generator=gen)
