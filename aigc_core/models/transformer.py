"""A small causal Transformer language model over characters (GPT-style, pre-norm).

References:
- Vaswani et al., "Attention Is All You Need" (2017), arXiv:1706.03762: scaled dot-product,
  multi-head attention (the seed's attention mechanism), here with a causal mask.
- Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2, 2019): pre-norm
  blocks, learned positions, tied input and output embeddings.
- Karpathy, nanoGPT `model.py`: the layout of this file.

Token + position embedding -> Dropout -> L x [x + Attn(LN(x)); x + MLP(LN(x))] -> LN -> Linear
(tied to the token embedding).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict

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

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(c, dim=2)  # 3 x (B, T, C)
        q, k, v = (y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for y in (q, k, v))
        # softmax(q k^T / sqrt(d)) v with a causal mask, (B, nh, T, hd). On the CPU, at these
        # context lengths, the plain (math) kernel trains 25% faster than the flash one
        # (transformer cpu preset, one thread: 7.5 vs 6.0 steps/s).
        cpu = x.device.type == "cpu"
        with sdpa_kernel(SDPBackend.MATH) if cpu else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C)
        return self.resid_drop(self.proj(y))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))  # (B, T, C)


class TransformerLM(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
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
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, V), and mean cross-entropy in nats if targets."""
        t = idx.shape[1]
        if t > self.cfg.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.cfg.block_size}")
        pos = torch.arange(t, device=idx.device)  # (T,)
        x = self.drop(self.tok(idx) + self.pos(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.tok.weight)  # (B, T, V), tied to the embedding
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss

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
