"""Text sampling: logits in, token ids out, apart from any network (DESIGN.md section 6.2).

References:
- Holtzman et al., "The Curious Case of Neural Text Degeneration" (2019), arXiv:1904.09751
  (top-p / nucleus sampling).
- Fan, Lewis, Dauphin, "Hierarchical Neural Story Generation" (2018), arXiv:1805.04833 (top-k).

`sample_tokens` drives any model given as a function `next_logits(ids (B, T)) -> (B, V)`, so a
language model's pyfunc can use it without this module importing the network. Temperature 0 is
greedy decoding. Stop sequences are token-id sequences (the tokenizer is the caller's); the
generated text is cut before the first stop sequence, which is not included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p
    stop: tuple[tuple[int, ...], ...] = field(default_factory=tuple)  # token-id sequences
    eos_id: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1] or be None, got {self.top_p}")
        if any(len(s) == 0 for s in self.stop):
            raise ValueError("stop sequences must not be empty")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, V) logits divided by the temperature (> 0)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (use greedy for 0), got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, V) logits with all but the k largest per row set to -inf (ties at the k-th kept)."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """(B, V) logits keeping, per row, the most likely tokens until their probability reaches p;
    the most likely token is always kept."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids under temperature, top-k and top-p."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    x = apply_temperature(logits.float(), params.temperature)
    if params.top_k is not None:
        x = top_k_filter(x, params.top_k)
    if params.top_p is not None:
        x = top_p_filter(x, params.top_p)
    probs = torch.softmax(x, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def find_stop(ids: Sequence[int], stops: Sequence[Sequence[int]]) -> int:
    """Index where the earliest stop sequence starts in `ids`, or -1."""
    best = -1
    for s in stops:
        n = len(s)
        for i in range(len(ids) - n + 1):
            if best != -1 and i >= best:
                break
            if list(ids[i : i + n]) == list(s):
                best = i
                break
    return best


@dataclass(frozen=True)
class Sampled:
    ids: list[int]  # generated tokens, stop sequence and eos excluded
    finish_reason: str  # "stop", "eos" or "length"


@torch.no_grad()
def sample_tokens(
    next_logits: Callable[[torch.Tensor], torch.Tensor],
    prompts: torch.Tensor,
    params: SamplingParams,
    seed: int,
) -> list[Sampled]:
    """Generate up to max_new_tokens after each prompt row (B, T) of token ids.

    Rows finish independently on eos or a stop sequence; finished rows keep being fed (padded
    with their last token) so the batch stays rectangular, but their output is frozen.
    """
    if prompts.ndim != 2 or prompts.shape[1] == 0:
        raise ValueError(f"prompts must be (B, T>=1) token ids, got shape {tuple(prompts.shape)}")
    gen = torch.Generator().manual_seed(seed)
    b = prompts.shape[0]
    ids = prompts.clone()
    new: list[list[int]] = [[] for _ in range(b)]
    reason = ["length"] * b
    done = [False] * b
    for _ in range(params.max_new_tokens):
        logits = next_logits(ids)  # (B, V)
        if logits.ndim != 2 or logits.shape[0] != b:
            raise ValueError(f"next_logits must return (B={b}, V), got {tuple(logits.shape)}")
        tok = next_token(logits, params, gen)  # (B,)
        for r in range(b):
            if done[r]:
                tok[r] = ids[r, -1]
                continue
            t = int(tok[r])
            if params.eos_id is not None and t == params.eos_id:
                done[r], reason[r] = True, "eos"
                continue
            new[r].append(t)
            cut = find_stop(new[r], params.stop)
            if cut != -1:
                del new[r][cut:]
                done[r], reason[r] = True, "stop"
        if all(done):
            break
        ids = torch.cat([ids, tok[:, None].to(ids.dtype)], dim=1)  # (B, T+1)
    return [Sampled(new[r], reason[r]) for r in range(b)]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest of the stop strings, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops if s) if i != -1]
    return (text[: min(hits)], True) if hits else (text, False)
