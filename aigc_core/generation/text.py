"""Text sampling: logits in, token ids out, apart from any network (DESIGN.md section 6.2).

References:
- Holtzman et al., "The Curious Case of Neural Text Degeneration" (2019), arXiv:1904.09751
  (top-p / nucleus sampling).
- Fan, Lewis, Dauphin, "Hierarchical Neural Story Generation" (2018), arXiv:1805.04833 (top-k).

`sample_tokens` drives any model given as a function `next_logits(ids (B, T)) -> (B, V)`, so a
language model's pyfunc can use it without this module importing the network. Temperature 0 is
greedy decoding. Stop sequences are token-id sequences (the tokenizer is the caller's); the
generated text is cut before the first stop sequence, which is not included. With one seed per
row, each row draws from its own generator, so a row's text does not depend on the rows batched
with it.

`token_logprobs` scores given token ids under a model `forward(ids (B, T)) -> logits (B, T, V)`
with the context cropped to `block_size` tokens, as a caller of `sample_tokens` feeds the model;
its mean over a text is the text's nats per token, whose exp is the perplexity that curation
bounds.

The options the sampler takes (`SamplingParams`) and a user or a request gives (`TextSampling`,
`PREDICT_PARAMS`), their checks and prompt files live in `aigc_core.generation.text_options`,
which does not import torch: the CLI checks them before anything slow starts.

`TextGenerator` puts these to work on a character-level language model `(ids (B, T)) ->
(logits (B, T, V), ...)` with `cfg.vocab` and `cfg.block_size`: batched `generate` and `score`
(what content batches and evaluation use) and the pyfunc request/response `predict`, whose
sampling options are the request's `params` (`PREDICT_PARAMS`, checked by `request_options`),
its rows read by `request_rows` (which the text VAE's `predict` shares).

A model with `decoder()` (a `Decoder`: the Transformer's key/value cache, the LSTM's carried
state) is decoded incrementally by `CachedLogits`: one token's forward pass per step while the
context fits in block_size, a new prefill of the last block_size tokens per step past it, so
the logits are those of the cropped context (`cropped_logits`, the model run whole on every
step) up to float rounding, and greedy text is the same.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from aigc_core.generation.shards import shard_seed
from aigc_core.generation.text_options import (
    PREDICT_PARAMS,
    RequestError,
    SamplingParams,
    TextSampling,
    request_option,
    request_options,
)
from aigc_core.models.chars import decode, encode

# An empty prompt starts a new document: training joins documents with blank lines.
DOCUMENT_START = "\n"


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
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids under temperature, top-k and top-p. `generator`: one
    for the batch, or one per row (each row then draws from its own stream)."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    x = apply_temperature(logits.float(), params.temperature)
    if params.top_k is not None:
        x = top_k_filter(x, params.top_k)
    if params.top_p is not None:
        x = top_p_filter(x, params.top_p)
    probs = torch.softmax(x, dim=-1)
    if isinstance(generator, Sequence):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"got {len(generator)} generators for {probs.shape[0]} rows")
        return torch.cat(
            [torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(generator)]
        )
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


def _stop_ending(ids: Sequence[int], stops: Sequence[Sequence[int]]) -> int:
    """Where the earliest stop sequence starts, for ids checked after every token (so any stop
    sequence present ends at the last id): `find_stop` without rescanning the whole row."""
    best = -1
    for s in stops:
        n = len(s)
        if len(ids) >= n and list(ids[-n:]) == list(s) and (best == -1 or len(ids) - n < best):
            best = len(ids) - n
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
    seed: int | Sequence[int],
) -> list[Sampled]:
    """Generate up to max_new_tokens after each prompt row (B, T) of token ids.

    `seed`: one for the batch, or one per row (a row's tokens then depend only on its own seed
    and prompt, not on the other rows). Rows finish independently on eos or a stop sequence;
    finished rows keep being fed (padded with their last token) so the batch stays rectangular,
    but their output is frozen.
    """
    if prompts.ndim != 2 or prompts.shape[1] == 0:
        raise ValueError(f"prompts must be (B, T>=1) token ids, got shape {tuple(prompts.shape)}")
    b = prompts.shape[0]
    if isinstance(seed, Sequence):
        if len(seed) != b:
            raise ValueError(f"got {len(seed)} seeds for {b} prompts: give one per prompt")
        gen: torch.Generator | list[torch.Generator] = [
            torch.Generator().manual_seed(int(s)) for s in seed
        ]
    else:
        gen = torch.Generator().manual_seed(seed)
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
            cut = _stop_ending(new[r], params.stop)
            if cut != -1:
                del new[r][cut:]
                done[r], reason[r] = True, "stop"
        if all(done):
            break
        ids = torch.cat([ids, tok[:, None].to(ids.dtype)], dim=1)  # (B, T+1)
    return [Sampled(new[r], reason[r]) for r in range(b)]


class Decoder(Protocol):
    """A model's incremental decoder (`model.decoder()`): `prefill(ids (B, T))` starts from the
    context (T <= block_size), `step(tok (B,))` appends one token; each returns the logits of
    the next token (B, V), as the model run on every id since the prefill would give."""

    def prefill(self, idx: torch.Tensor) -> torch.Tensor: ...

    def step(self, tok: torch.Tensor) -> torch.Tensor: ...


def cropped_logits(
    model: torch.nn.Module, block_size: int, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`next_logits` for `sample_tokens` that runs the model on the last block_size ids at
    every step: O(block_size) positions per token, the reference `CachedLogits` matches."""

    def next_logits(ids: torch.Tensor) -> torch.Tensor:
        return model(ids[:, -block_size:].to(device))[0][:, -1].float().cpu()  # (B, V)

    return next_logits


class CachedLogits:
    """`next_logits` for `sample_tokens` from a `Decoder`, for one batch: a call with the ids of
    the last call plus one token steps the decoder; any other call (the first, or a context
    longer than block_size, where learned positions and the LSTM's window slide) prefills the
    last block_size ids. The logits are `cropped_logits`' up to float rounding."""

    def __init__(self, decoder: Decoder, block_size: int, device: torch.device):
        self.decoder, self.block_size, self.device = decoder, block_size, device
        self.seen = 0  # ids in the decoder since its prefill

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        if self.seen > 0 and t == self.seen + 1 <= self.block_size:
            logits = self.decoder.step(ids[:, -1].to(self.device))
            self.seen = t
        else:
            logits = self.decoder.prefill(ids[:, -self.block_size :].to(self.device))
            self.seen = min(t, self.block_size)
        return logits.float().cpu()  # (B, V)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest of the stop strings, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops if s) if i != -1]
    return (text[: min(hits)], True) if hits else (text, False)


@torch.no_grad()
def token_logprobs(
    forward: Callable[[torch.Tensor], torch.Tensor],
    ids: torch.Tensor,
    block_size: int,
    chunk: int = 256,
) -> torch.Tensor:
    """(B, L) token ids -> (B, L-1) natural log-probabilities of ids[:, t] given
    ids[:, max(0, t - block_size):t], for t = 1..L-1: the context a sampler that crops to the
    last block_size tokens gives the model. `forward(ids (b, T)) -> logits (b, T, V)` must be
    causal. Positions up to block_size share one forward pass; each later position gets its own
    window (batched `chunk` windows at a time)."""
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"ids must be (B, L>=1) token ids, got shape {tuple(ids.shape)}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    b, n = ids.shape
    out = torch.empty(b, n - 1)
    if n == 1:
        return out
    head = ids[:, : min(n, block_size)]  # (B, Ta)
    ta = head.shape[1]
    logp = F.log_softmax(forward(head).float(), dim=-1)  # (B, Ta, V)
    if n <= ta:  # the whole row fits in one context
        return logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    out[:, : ta - 1] = logp[:, :-1].gather(-1, ids[:, 1:ta, None]).squeeze(-1)
    out[:, ta - 1] = logp[:, -1].gather(-1, ids[:, ta : ta + 1]).squeeze(-1)
    # t = block_size+1 .. L-1: the window ids[:, t-block_size:t] predicts ids[:, t]
    windows = ids.unfold(1, block_size, 1)[:, 1 : n - block_size]  # (B, W, block_size)
    w = windows.shape[1]
    flat = windows.reshape(b * w, block_size)  # (B*W, block_size)
    targets = ids[:, block_size + 1 :].reshape(b * w)  # (B*W,)
    scores = torch.empty(b * w)
    for i in range(0, b * w, chunk):
        last = F.log_softmax(forward(flat[i : i + chunk])[:, -1].float(), dim=-1)  # (c, V)
        scores[i : i + chunk] = last.gather(-1, targets[i : i + chunk, None]).squeeze(-1)
    out[:, ta:] = scores.view(b, w)
    return out


def prompt_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One seed per prompt of `n`: `seed` as given (one per prompt), or stream i of one seed
    (`shard_seed`) for prompt i."""
    if isinstance(seed, Sequence):
        seeds = [int(s) for s in seed]
    else:
        seeds = [shard_seed(int(seed), i) for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} prompts")
    return seeds


def same_length_batches(seqs: Sequence[torch.Tensor], batch_size: int) -> Iterator[list[int]]:
    """Indices of `seqs` in batches of at most `batch_size` sequences of one length (stacked
    without padding), lengths in the order they first appear."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(seqs):
        groups[len(s)].append(i)
    for members in groups.values():
        for j in range(0, len(members), batch_size):
            yield members[j : j + batch_size]


@dataclass(frozen=True)
class TextBatch:
    """One batch of `TextGenerator.generate`, which a generator decodes its own way
    (`sample_batch`): prompts whose contexts have one length, a seed each, and the request's
    sampling options (the stop strings both as token ids in `params` and as given)."""

    prompts: list[str]
    contexts: list[torch.Tensor]  # (T,) each, one T
    seeds: list[int]
    params: SamplingParams
    stop: tuple[str, ...]
    cache: bool  # decode with the model's `decoder()` where it has one


def missing(v) -> bool:
    """Whether a request row's cell holds no value (None, NA, NaN: the row left the option to
    the request's params)."""
    if isinstance(v, list | tuple | np.ndarray):
        return False
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


@dataclass(frozen=True)
class RequestRow:
    """One row of a text request (`TextGenerator.predict`) with its sampling options resolved:
    the request's params, and the row's own value where it gives one. `values`: the row as
    given, for the options of a generator beyond `PREDICT_PARAMS` (the text VAE's)."""

    index: int  # the row's position in the request
    prompt: str
    options: dict[str, Any]  # every PREDICT_PARAMS option, checked
    own_seed: bool  # the row gave its own seed
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_seed(self) -> int:
        """The seed of the row's text: stream `index` of the request's seed, or stream 0 of the
        row's own (so a one-row request answers the same either way)."""
        return shard_seed(self.options["seed"], 0 if self.own_seed else self.index)

    def answer(self, text: str, finish_reason: str) -> dict[str, Any]:
        """A response row for this request row."""
        return {
            "request": self.index,
            "prompt": self.prompt,
            "seed": self.options["seed"],
            "text": text,
            "finish_reason": finish_reason,
        }


def request_rows(request: pd.DataFrame, params: Mapping[str, Any] | None) -> list[RequestRow]:
    """The rows of a text request, every option checked before any text is generated
    (RequestError naming the option, and the row where a row gave it)."""
    base = request_options(params)
    if "prompt" not in request.columns:
        raise RequestError(
            f"a text request needs a 'prompt' column; got columns {list(request.columns)}"
        )
    rows = []
    for req, row in enumerate(request.to_dict("records")):
        opts, own_seed = dict(base), False
        for name in PREDICT_PARAMS:
            if name in row and not missing(row[name]):
                opts[name] = request_option(name, row[name], f"in row {req}")
                own_seed = own_seed or name == "seed"
        rows.append(RequestRow(req, str(row["prompt"]), opts, own_seed, row))
    return rows


class TextGenerator:
    """A character-level language model ready to sample and score.

    Request (`predict`): a DataFrame with a `prompt` column (text; empty starts a new document),
    one row per prompt, and `params`, the sampling options of the whole request (`PREDICT_PARAMS`:
    temperature, top_k, top_p, max_new_tokens, stop, seed). A row may still give an option as a
    column of the same name (the request shape before params): where a row has a value, it wins
    for that row. Row i draws from the i-th stream of the request's seed (as `generate` with one
    seed: equal prompts get different texts); a row with its own `seed` draws from that seed's
    first stream, so a one-row request answers the same either way.
    Response: one row per prompt: `request` (the row), `prompt`, `seed` (the row's seed, as given),
    `text` (the continuation, without the prompt and the stop string) and `finish_reason`
    ("length" or "stop").

    Batches use `generate` (one seed per prompt, prompts of equal length sampled together) and
    `score` (each text's mean nats per character under the model, given its prompt: the log of
    the perplexity that curation bounds).
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        self.vocab: str = model.cfg.vocab

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def context_ids(self, prompt: str) -> torch.Tensor:
        """(T,) token ids the model continues for `prompt`; raises ValueError naming characters
        outside the vocabulary."""
        if prompt:
            return encode(prompt, self.vocab)
        if DOCUMENT_START not in self.vocab:
            raise ValueError(
                "an empty prompt starts a new document with a newline, which this model's "
                "vocabulary lacks: give prompts (e.g. --prompt-file)"
            )
        return encode(DOCUMENT_START, self.vocab)

    def stop_ids(self, stop: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        """Stop strings as token-id sequences; one the model can never write is an error."""
        out = []
        for s in stop:
            if not s:
                raise ValueError("stop strings must not be empty")
            unknown = sorted(set(s) - set(self.vocab))
            if unknown:
                raise ValueError(
                    f"stop string {s!r} has characters outside the model's vocabulary "
                    f"{unknown!r}: the model never writes it; drop it"
                )
            out.append(tuple(encode(s, self.vocab).tolist()))
        return tuple(out)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        seed: int | Sequence[int],
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        batch_size: int = 256,
        cache: bool = True,
    ) -> list[tuple[str, str]]:
        """(continuation, finish_reason) per prompt. `seed`: one per prompt, or one for the
        request, from which prompt i gets its own (independent streams, so equal prompts get
        different texts). A prompt's text depends only on the model, the prompt, its seed and
        the sampling options, never on the other prompts. Prompts of equal length share
        batches. `cache`: decode with the model's `decoder()` where it has one; False runs the
        model on the whole (cropped) context for every token (`cropped_logits`), the reference
        the cached decoder matches. A generator of another kind of model (the text VAE's)
        keeps these checks and batches and decodes a batch its own way (`sample_batch`)."""
        TextSampling(max_new_tokens, temperature, top_k, top_p, tuple(stop))  # range checks
        seeds = prompt_seeds(seed, len(prompts))
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=self.stop_ids(stop),
        )
        contexts = [self.context_ids(p) for p in prompts]
        out: list[tuple[str, str]] = [("", "")] * len(prompts)
        with torch.inference_mode():
            for rows in same_length_batches(contexts, batch_size):
                batch = TextBatch(
                    [prompts[i] for i in rows],
                    [contexts[i] for i in rows],
                    [seeds[i] for i in rows],
                    params,
                    tuple(stop),
                    cache,
                )
                for i, result in zip(rows, self.sample_batch(batch), strict=True):
                    out[i] = result
        return out

    def sample_batch(self, batch: TextBatch) -> list[tuple[str, str]]:
        """(continuation, finish_reason) per prompt of one batch of `generate`; the sampler
        stops at the stop strings (`params.stop`, as token ids)."""
        block, device = self.model.cfg.block_size, self._device()
        next_logits = (
            CachedLogits(self.model.decoder(), block, device)
            if batch.cache and hasattr(self.model, "decoder")
            else cropped_logits(self.model, block, device)
        )
        ids = torch.stack(batch.contexts)  # (B, T)
        sampled = sample_tokens(next_logits, ids, batch.params, batch.seeds)
        return [(decode(s.ids, self.vocab), s.finish_reason) for s in sampled]

    def score(
        self, prompts: Sequence[str], texts: Sequence[str], batch_size: int = 256
    ) -> list[float]:
        """Mean nats per character of each text after its prompt under the model (NaN for an
        empty text); exp of it is the text's perplexity. The context is cropped to the model's
        block size, as in `generate`. Texts of equal total length share batches."""
        if len(prompts) != len(texts):
            raise ValueError(f"got {len(prompts)} prompts for {len(texts)} texts")
        block, device = self.model.cfg.block_size, self._device()

        def forward(ids: torch.Tensor) -> torch.Tensor:
            return self.model(ids.to(device))[0].float().cpu()  # (B, T, V)

        contexts = [self.context_ids(p) for p in prompts]
        seqs = [torch.cat([c, encode(t, self.vocab)]) for c, t in zip(contexts, texts, strict=True)]
        out = [math.nan] * len(texts)
        with torch.inference_mode():
            for rows in same_length_batches(seqs, batch_size):
                logp = token_logprobs(forward, torch.stack([seqs[i] for i in rows]), block)
                for r, i in enumerate(rows):
                    if texts[i]:  # logp[:, t-1] scores token t; the text starts after it
                        out[i] = float(-logp[r, len(contexts[i]) - 1 :].mean())
        return out

    def predict(
        self, request: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        return pd.DataFrame(
            [row.answer(*self.sample_row(row)) for row in request_rows(request, params)]
        )

    def sample_row(self, row: RequestRow) -> tuple[str, str]:
        """(text, finish_reason) of one request row: its prompt continued under its options."""
        opts = row.options
        ((text, reason),) = self.generate(
            [row.prompt],
            opts["max_new_tokens"],
            [row.stream_seed],
            opts["temperature"],
            opts["top_k"] or None,  # 0: every token
            opts["top_p"],
            opts["stop"],
        )
        return text, reason
