"""Training of the character-level language models (LSTM and Transformer): data preparation
and the job run by `loop.fit` (the presets live in `aigc_core.families.charlstm` and
`.transformer`).

Text becomes one long tensor of token ids held on the device; a batch is `batch_size` windows
of `block_size + 1` ids starting at random offsets (x = the first block_size, y = the next).
Validation loss is the mean cross-entropy in nats per character over a fixed set of windows of
held-out text; bits per character = nats / ln 2.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch import nn

from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab, encode
from aigc_core.models.transformer import TransformerConfig, TransformerLM
from aigc_core.training import ddp
from aigc_core.training.device import autocast, bf16_supported
from aigc_core.training.loop import TrainConfig, optimizer_kwargs

log = logging.getLogger(__name__)

LMConfig = CharLSTMConfig | TransformerConfig


def build_lm(cfg: LMConfig) -> nn.Module:
    return CharLSTM(cfg) if isinstance(cfg, CharLSTMConfig) else TransformerLM(cfg)


def prepare_text(
    train_text: str, val_text: str | None = None, vocab: str | None = None, val_fraction=0.1
) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(vocab, train ids (N,), val ids (M,)). Without `val_text` the last `val_fraction` of
    `train_text` is held out. The vocabulary covers both texts unless given (a warm start
    keeps its model's vocabulary)."""
    if val_text is None:
        cut = int(len(train_text) * (1 - val_fraction))
        train_text, val_text = train_text[:cut], train_text[cut:]
    vocab = vocab or build_vocab(train_text + val_text)
    return vocab, encode(train_text, vocab), encode(val_text, vocab)


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (nanoGPT): not on biases, norms or embeddings' 1-d params."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class LMJob:
    def __init__(
        self,
        train_ids: torch.Tensor,
        val_ids: torch.Tensor,
        model_cfg: LMConfig,
        train_cfg: TrainConfig,
        device: torch.device,
    ):
        t = model_cfg.block_size
        for name, ids in (("training", train_ids), ("validation", val_ids)):
            if len(ids) <= t + 1:
                raise ValueError(
                    f"{name} text has {len(ids)} characters; it needs more than block_size+1 "
                    f"= {t + 1}: use more text or a smaller preset"
                )
        self.model_cfg, self.cfg, self.device = model_cfg, train_cfg, device
        torch.manual_seed(train_cfg.seed)
        self.model = build_lm(model_cfg).to(device)
        self.run = ddp.wrap(self.model, device)
        if train_cfg.compile:
            self.run = torch.compile(self.run)
        self.opt = torch.optim.AdamW(
            _decay_groups(self.model, train_cfg.weight_decay),
            lr=train_cfg.lr,
            betas=(0.9, 0.99),
            **optimizer_kwargs(device),
        )
        self.train_ids, self.val_ids = train_ids.to(device), val_ids.to(device)
        self.offsets = torch.arange(t + 1, device=device)  # (T+1,)
        self.use_bf16 = train_cfg.bf16 and bf16_supported(device)
        self.rng = torch.Generator().manual_seed(train_cfg.seed + 1000 * ddp.rank())
        self.modules = {"model": self.model}
        self.optimizers = {"model": self.opt}
        self.samples_per_step = train_cfg.batch_size * t  # characters
        log.info(
            "training %s on %s (bf16=%s): %d training characters, %d steps of %dx%d",
            type(self.model).__name__,
            device,
            self.use_bf16,
            len(train_ids),
            train_cfg.steps,
            train_cfg.batch_size,
            t,
        )

    def _windows(self, ids: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        return ids[starts.to(self.device)[:, None] + self.offsets]  # (B, T+1)

    def _loss(self, module: nn.Module, w: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.use_bf16):
            return module(w[:, :-1], w[:, 1:])[1]

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr_at(step - 1)
        n = len(self.train_ids) - self.model_cfg.block_size - 1
        starts = torch.randint(n, (self.cfg.batch_size,), generator=self.rng)
        loss = self._loss(self.run, self._windows(self.train_ids, starts))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss in nats per character and bits per character, on fixed windows."""
        self.model.eval()
        n = len(self.val_ids) - self.model_cfg.block_size - 1
        gen = torch.Generator().manual_seed(12345)
        losses = []
        for _ in range(self.cfg.eval_batches):
            starts = torch.randint(n, (self.cfg.batch_size,), generator=gen)
            losses.append(self._loss(self.model, self._windows(self.val_ids, starts)))
        self.model.train()
        nats = torch.stack(losses).mean().item()
        return {"val_loss": nats, "val_bpc": nats / math.log(2)}


def with_vocab(cfg: LMConfig, vocab: str) -> LMConfig:
    return dataclasses.replace(cfg, vocab=vocab)
