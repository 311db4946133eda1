"""A small causal Transformer language model over characters (GPT-style, pre-norm).

References:
- Vaswani et al., "Attention Is All You Need" (2017), arXiv:1706.03762: scaled dot-product,
  multi-head attention (the seed's attention mechanism), here with a causal mask.
- Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2, 2019): pre-norm
  blocks, learned positions, tied input and output embeddings.
- Karpathy, nanoGPT `model.py`: the layout of this file.
- Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding" (2021),
  arXiv:2104.09864: rotary positions (`positions="rotary"`), in GPT-NeoX's half-split layout.

Token (+ learned position) embedding -> Dropout -> L x [x + Attn(LN(x)); x + MLP(LN(x))] -> LN
-> Linear (tied to the token embedding). Positions are either a learned embedding added to the
tokens (GPT-2's, `positions="learned"`, the default and what older saved models have) or rotary:
each head's queries and keys are rotated by an angle proportional to their position, so that
attention sees relative offsets, and there is nothing per position to learn. The cpu preset uses
rotary positions: with a 256-character context and 8 windows a step, learned positions reached
1.72 nats/char in 1,500 steps (1.38 with 64 characters and 32 windows), rotary ones 1.30
(benchmarks/lm_convergence.py, 2 cores).

Decoding (`decoder()`) keeps each layer's keys and values in a `KVCache`, so a new token costs
one position's forward pass instead of the whole context's. Positions are absolute either way:
a decoder holds at most block_size positions, and continuing past them means a new prefill of
the last block_size tokens (`aigc_core.generation.text.CachedLogits` does it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Literal

import torch
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from aigc_core.config_types import CONFIG, BelowOne, DerivedStr, PositiveInt

Picker = Callable[[torch.Tensor], torch.Tensor]  # logits (B, V) -> token ids (B, 1)


@dataclass(frozen=True, config=CONFIG)
class TransformerConfig:
    vocab: DerivedStr
    """the characters in id order (aigc_core.models.chars), filled in from the training text"""
    block_size: PositiveInt = 128
    """context length"""
    n_layer: PositiveInt = 4
    n_head: PositiveInt = 4
    n_embd: PositiveInt = 128
    """a multiple of n_head"""
    dropout: BelowOne = 0.1
    positions: Literal["learned", "rotary"] = "learned"
    """learned: an embedding per position (GPT-2); rotary: queries and keys rotated by position
    (RoFormer), nothing to learn per position"""

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.positions == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(
                f"rotary positions need an even head size, got n_embd / n_head = "
                f"{self.n_embd // self.n_head}"
            )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def to_dict(self) -> dict:
        return {"family": "transformer", **asdict(self)}


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor | None = None,
        start: int = 0,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With `kv`, this layer's cached keys and values (2, B, nh,
        block_size, hd): x holds positions start..start+T-1, whose keys and values are written
        there, and attends to every cached position up to its own. `rotary`: (cos, sin) (T,
        hd/2) of those positions, to rotate queries and keys by (the cache holds rotated keys)."""
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(c, dim=2)  # 3 x (B, T, C)
        q, k, v = (y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for y in (q, k, v))
        if rotary is not None:
            q, k = rotate(q, *rotary).type_as(v), rotate(k, *rotary).type_as(v)
        mask, causal = None, True
        if kv is not None:
            end = start + t
            kv[0][:, :, start:end], kv[1][:, :, start:end] = k, v
            if start:  # attend to the cache; a prefill (start 0) attends to k, v as they are
                k, v, causal = kv[0][:, :, :end], kv[1][:, :, :end], False
                if t > 1:  # position start+i sees keys 0..start+i
                    mask = torch.ones(t, end, dtype=torch.bool, device=x.device).tril(start)
        # softmax(q k^T / sqrt(d)) v with a causal mask, (B, nh, T, hd). On the CPU, at these
        # context lengths, the plain (math) kernel trains 25% faster than the flash one
        # (transformer cpu preset, one thread: 7.5 vs 6.0 steps/s).
        cpu = x.device.type == "cpu"
        with sdpa_kernel(SDPBackend.MATH) if cpu else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=causal,
                dropout_p=self.dropout if self.training else 0.0,
            )
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C)
        return self.resid_drop(self.proj(y))


def rotary_tables(block_size: int, head_size: int, base: float = 10000.0):
    """(cos, sin), each (block_size, head_size / 2) float32: position p's angle for pair i is
    p / base**(2i / head_size) (RoFormer's frequencies)."""
    inv_freq = base ** -(torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
    angles = torch.arange(block_size, dtype=torch.float64)[:, None] * inv_freq  # (T, hd/2)
    return angles.cos().float(), angles.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, hd) rotated pairwise by position: (x1, x2) halves -> (x1 cos - x2 sin,
    x1 sin + x2 cos) (GPT-NeoX's half-split pairs), in float32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor | None = None,
        start: int = 0,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv, start, rotary)
        return x + self.mlp(self.ln2(x))  # (B, T, C)


class KVCache:
    """Each layer's keys and values of the positions decoded so far, in buffers preallocated for
    block_size positions and written in place: as fast as concatenating per token at the cpu
    preset's 64 positions (measured, 64 rows), without copying the whole cache per token at
    longer ones. `length` positions are filled; the next forward pass writes from there."""

    def __init__(
        self, cfg: TransformerConfig, batch: int, device: torch.device, dtype: torch.dtype
    ):
        shape = (cfg.n_layer, 2, batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.kv = torch.empty(shape, device=device, dtype=dtype)  # (L, 2, B, nh, block, hd)
        self.length = 0

    @property
    def batch(self) -> int:
        return self.kv.shape[2]


class TransformerLM(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.positions == "learned":
            self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
        else:  # tables, not parameters: not saved, rebuilt from the config
            cos, sin = rotary_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scaled init of residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, V), and mean cross-entropy in nats if targets. With a
        cache, idx continues the cache's positions (their keys and values are added to it)."""
        t = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + t > self.cfg.block_size:
            raise ValueError(
                f"sequence length {start + t} exceeds block_size {self.cfg.block_size}"
                + (" (cropping the context means a new prefill)" if cache is not None else "")
            )
        if cache is not None and cache.batch != idx.shape[0]:
            raise ValueError(f"a cache of {cache.batch} rows cannot take {idx.shape[0]}")
        x, rotary = self.tok(idx), None  # (B, T, C)
        if self.cfg.positions == "learned":
            x = x + self.pos(torch.arange(start, start + t, device=idx.device))
        else:
            rotary = self.rotary_cos[start : start + t], self.rotary_sin[start : start + t]
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache.kv[i], start, rotary)
        if cache is not None:
            cache.length = start + t
        logits = F.linear(self.ln_f(x), self.tok.weight)  # (B, T, V), tied to the embedding
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss

    def decoder(self) -> TransformerDecoder:
        """An incremental decoder over this model (`TransformerDecoder`)."""
        return TransformerDecoder(self)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, pick: Picker) -> torch.Tensor:
        """Continue each row of idx (B, T0) by max_new_tokens tokens chosen by `pick`
        (last-position logits (B, V) -> ids (B, 1)); the context is cropped to block_size."""
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.cfg.block_size :])  # (B, T, V)
            idx = torch.cat([idx, pick(logits[:, -1].float())], dim=1)
        self.train(was_training)
        return idx


class TransformerDecoder:
    """Decodes with a key/value cache: `prefill(ids (B, T))` runs the context (T <= block_size)
    from scratch, `step(tok (B,))` adds one token; both return the last position's logits
    (B, V), those of `model(ids)[0][:, -1]` for the ids seen since the prefill, up to float
    rounding. The cache's buffers are kept across prefills of the same batch size."""

    def __init__(self, model: TransformerLM):
        self.model = model
        self.cache: KVCache | None = None

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.model.tok.weight
        if self.cache is None or self.cache.batch != idx.shape[0]:
            self.cache = KVCache(self.model.cfg, idx.shape[0], w.device, w.dtype)
        self.cache.length = 0
        return self.model(idx, cache=self.cache)[0][:, -1]  # (B, V)

    @torch.no_grad()
    def step(self, tok: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            raise RuntimeError("step before prefill: give the decoder its context first")
        return self.model(tok[:, None], cache=self.cache)[0][:, -1]  # (B, V)
