"""Character-level LSTM language model.

References:
- Hochreiter, Schmidhuber, "Long Short-Term Memory" (1997).
- Karpathy, "The Unreasonable Effectiveness of Recurrent Neural Networks" (2015), char-rnn.
- Zaremba, Sutskever, Vinyals, "Recurrent Neural Network Regularization" (2014), arXiv:1409.2329:
  dropout between LSTM layers and before the output layer.

Embedding (V -> E) -> 2-layer LSTM (H, dropout between layers) -> Dropout -> Linear (H -> V).

Decoding (`decoder()`) carries the LSTM's (h, c) state and feeds one token per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import torch
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F

from aigc_core.config_types import CONFIG, BelowOne, DerivedStr, PositiveInt


@dataclass(frozen=True, config=CONFIG)
class CharLSTMConfig:
    vocab: DerivedStr
    """the characters in id order (aigc_core.models.chars), filled in from the training text"""
    embed_dim: PositiveInt = 64
    hidden: PositiveInt = 256
    layers: PositiveInt = 2
    dropout: BelowOne = 0.2
    block_size: PositiveInt = 128
    """training window length (BPTT length)"""

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def to_dict(self) -> dict:
        return {"family": "charlstm", **asdict(self)}


State = tuple[torch.Tensor, torch.Tensor]
Picker = Callable[[torch.Tensor], torch.Tensor]  # logits (B, V) -> token ids (B, 1)


class CharLSTM(nn.Module):
    def __init__(self, cfg: CharLSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden,
            num_layers=cfg.layers,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """idx (B, T) -> logits (B, T, V), mean cross-entropy in nats if targets, new state."""
        h, state = self.lstm(self.embed(idx), state)  # (B, T, H)
        logits = self.head(self.drop(h))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss, state

    def decoder(self) -> CharLSTMDecoder:
        """An incremental decoder over this model (`CharLSTMDecoder`)."""
        return CharLSTMDecoder(self)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, pick: Picker) -> torch.Tensor:
        """Continue each row of idx (B, T0) by max_new_tokens tokens chosen by `pick`
        (last-position logits (B, V) -> ids (B, 1), e.g. aigc_core.generation.text.next_token);
        returns (B, T0 + max_new_tokens). The LSTM state carries over, so each step costs O(1)."""
        was_training = self.training
        self.eval()
        logits, _, state = self(idx)
        out = [idx]
        for _ in range(max_new_tokens):
            tok = pick(logits[:, -1].float())  # (B, 1)
            out.append(tok)
            logits, _, state = self(tok, state=state)
        self.train(was_training)
        return torch.cat(out, dim=1)


class CharLSTMDecoder:
    """Decodes one token per step from the carried (h, c) state: `prefill(ids (B, T))` runs the
    context from the zero state, `step(tok (B,))` adds one token; both return the last
    position's logits (B, V), those of `model(ids)[0][:, -1]` for the ids seen since the
    prefill, up to float rounding."""

    def __init__(self, model: CharLSTM):
        self.model = model
        self.state: State | None = None

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor) -> torch.Tensor:
        logits, _, self.state = self.model(idx)  # (B, T, V)
        return logits[:, -1]  # (B, V)

    @torch.no_grad()
    def step(self, tok: torch.Tensor) -> torch.Tensor:
        if self.state is None:
            raise RuntimeError("step before prefill: give the decoder its context first")
        logits, _, self.state = self.model(tok[:, None], state=self.state)  # (B, 1, V)
        return logits[:, -1]  # (B, V)
