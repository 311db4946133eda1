"""Training of the sentence VAE (`aigc_core.models.textvae`): sentences, the job `loop.fit` runs
(the presets live in `aigc_core.families.textvae`).

Sentences (`sentences`): the text is cut into paragraphs at blank lines (the snapshot's
documents are joined by blank lines, so no sentence spans two documents), each paragraph's
whitespace runs become one space (a line break inside a paragraph is layout, not content), and
a paragraph is cut after ".", "!" or "?" followed by a space; runs of 4 or more of the same
"*", "=", "-", "~", "^" or "#" (reStructuredText's heading underlines) become a space.
Sentences of `MIN_CHARS` to `max_len` characters are kept; longer ones are dropped rather than
cut (a cut sentence teaches the decoder to stop mid-phrase), and the family logs how many.
Character level, with the snapshot's vocabulary, as the other text families.

One step draws `batch_size` sentences by index (padded to the longest), drops words of the
decoder's input (Bowman et al.'s word dropout: every character of a dropped word, spaces
excepted, becomes UNK, so the decoder must read the sentence from z), and minimizes
reconstruction + beta(step) * KL per sentence, beta rising from 0 to 1 (KL annealing,
`kl_weight`), with optional free bits. Evaluation is the held-out negative ELBO in nats per
character (EOS counted as one: it ends a sentence as a newline ends a line), the KL term per
sentence, the active units and the reconstruction accuracy (`heldout_scores`).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import torch
from pydantic.dataclasses import dataclass

from aigc_core.config_types import CONFIG, NonNegativeFloat, NonNegativeInt, Probability
from aigc_core.models.chars import encode
from aigc_core.models.textvae import (
    TextVAE,
    TextVAEConfig,
    active_units,
    decode_from,
    decoder_inputs,
    elbo_terms,
    kl_weight,
    kl_with_free_bits,
    targets,
)
from aigc_core.training import ddp
from aigc_core.training.device import autocast, bf16_supported
from aigc_core.training.loop import TrainConfig, optimizer_kwargs

log = logging.getLogger(__name__)

MIN_CHARS = 8  # shorter "sentences" are headings, list markers and numbers
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
UNDERLINE = re.compile(r"([*=\-~^#])\1{3,}")
EVAL_SENTENCES = 512  # held-out sentences scored (the first ones: fixed)


@dataclass(frozen=True, config=CONFIG)
class TextVAETrainConfig(TrainConfig):
    """Training settings of the sentence VAE: the language models' with the VAE's own."""

    kl_anneal: Literal["linear", "sigmoid", "none"] = "linear"
    """how the KL term's weight rises from 0 to 1"""
    anneal_steps: NonNegativeInt = 1000
    """steps over which it rises (0: weight 1 from the start)"""
    word_dropout: Probability = 0.3
    """share of words of the decoder's input replaced by UNK"""
    free_bits: NonNegativeFloat = 0.0
    """nats per latent unit below which its KL is not pushed (0: off)"""


def sentences(text: str, max_len: int) -> tuple[list[str], int]:
    """(the sentences of `text` of MIN_CHARS..max_len characters, how many were longer)."""
    kept, long = [], 0
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(UNDERLINE.sub(" ", para).split())
        for s in SENTENCE_END.split(flat):
            if len(s) > max_len:
                long += 1
            elif len(s) >= MIN_CHARS:
                kept.append(s)
    return kept, long


def encode_batch(texts: list[str], vocab: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentences -> (ids (B, T) padded with 0 to the longest, lengths (B,)). Empty ones are an
    error: an encoder needs one character."""
    if any(not t for t in texts):
        raise ValueError(
            "cannot encode an empty sentence: the encoder reads at least one character"
        )
    rows = [encode(t, vocab) for t in texts]
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, lengths


def word_dropout(
    inputs: torch.Tensor, space: int | None, p: float, unk: int, generator: torch.Generator
) -> torch.Tensor:
    """Decoder inputs (B, T+1) (BOS first) with each word dropped with probability p: all its
    characters replaced by `unk`. Words are runs between spaces (`space`: the space's id; None,
    a vocabulary without one: each character is a word); BOS and spaces are kept."""
    if p <= 0:
        return inputs
    body = inputs[:, 1:]  # (B, T)
    if space is None:
        is_space = torch.zeros_like(body, dtype=torch.bool)
        word = torch.arange(body.shape[1], device=body.device).expand_as(body)
    else:
        is_space = body == space
        word = is_space.long().cumsum(dim=1)  # (B, T): a word's index within its row
    drop_word = torch.rand(body.shape, generator=generator).to(body.device) < p  # (B, T)
    dropped = drop_word.gather(1, word.clamp(max=body.shape[1] - 1)) & ~is_space
    return torch.cat([inputs[:, :1], body.masked_fill(dropped, unk)], dim=1)


class TextVAEJob:
    def __init__(
        self,
        train: list[str],
        val: list[str],
        model_cfg: TextVAEConfig,
        train_cfg: TextVAETrainConfig,
        device: torch.device,
    ):
        for name, rows in (("training", train), ("validation", val)):
            if len(rows) < 2:
                raise ValueError(
                    f"{name} text has {len(rows)} sentences of {MIN_CHARS} to "
                    f"{model_cfg.max_len} characters; it needs at least 2: use more text or a "
                    "larger max_len"
                )
        self.model_cfg, self.cfg, self.device = model_cfg, train_cfg, device
        torch.manual_seed(train_cfg.seed)
        self.model = TextVAE(model_cfg).to(device)
        self.run = ddp.wrap(self.model, device)
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=train_cfg.lr, **optimizer_kwargs(device)
        )
        self.train_ids, self.train_lengths = encode_batch(train, model_cfg.vocab)
        self.val_ids, self.val_lengths = encode_batch(val[:EVAL_SENTENCES], model_cfg.vocab)
        self.space = model_cfg.vocab.index(" ") if " " in model_cfg.vocab else None
        self.use_bf16 = train_cfg.bf16 and bf16_supported(device)
        self.rng = torch.Generator().manual_seed(train_cfg.seed + 1000 * ddp.rank())
        self.modules = {"model": self.model}
        self.optimizers = {"model": self.opt}
        self.samples_per_step = train_cfg.batch_size  # sentences
        log.info(
            "training the sentence VAE on %s (bf16=%s): %d training and %d held-out sentences, "
            "%d steps of %d",
            device,
            self.use_bf16,
            len(train),
            len(val),
            train_cfg.steps,
            train_cfg.batch_size,
        )

    def _batch(self, ids: torch.Tensor, lengths: torch.Tensor, idx: torch.Tensor):
        lens = lengths[idx]
        return ids[idx, : int(lens.max())].to(self.device), lens.to(self.device)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        cfg, mcfg = self.cfg, self.model_cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr_at(step - 1)
        idx = torch.randint(len(self.train_ids), (cfg.batch_size,), generator=self.rng)
        ids, lens = self._batch(self.train_ids, self.train_lengths, idx)
        eps = torch.randn(len(idx), mcfg.z_dim, generator=self.rng).to(self.device)
        dec_in = word_dropout(
            decoder_inputs(ids, mcfg.bos), self.space, cfg.word_dropout, mcfg.unk, self.rng
        )
        with autocast(self.device, self.use_bf16):
            logits, mu, logvar = self.run(ids, lens, eps, dec_in)
        recon, kl, _ = elbo_terms(logits, targets(ids, lens, mcfg.eos), mu, logvar)
        beta = kl_weight(step - 1, cfg.kl_anneal, cfg.anneal_steps)
        kl_term = kl_with_free_bits(mu, logvar, cfg.free_bits)
        loss = recon.mean() + beta * kl_term
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        return {
            "loss": loss.detach(),
            "recon": recon.mean().detach(),
            "kl": kl.mean().detach(),
            "kl_weight": torch.tensor(beta),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The held-out scores (`heldout_scores`) with a fixed noise draw."""
        self.model.eval()
        scores = heldout_scores(self.model, self.val_ids, self.val_lengths)
        self.model.train()
        return {f"val_{k}": v for k, v in scores.items()}


def _greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


@torch.no_grad()
def heldout_scores(
    model: TextVAE, ids: torch.Tensor, lengths: torch.Tensor, batch: int = 256, seed: int = 12345
) -> dict[str, float]:
    """Scores of sentences ids (N, T) / lengths (N,) under the model (eval mode): `neg_elbo`
    (nats per character, EOS counted: reconstruction at one posterior sample plus KL, summed over
    the sentences, over their symbols), `kl` (nats per sentence), `recon_nats` (per character),
    `active_units` (Burda et al.) and `recon_accuracy` (share of characters, EOS included, that
    greedy decoding from the posterior mean gets right at their position)."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    total_recon = total_kl = symbols = correct = 0.0
    means = []
    for i in range(0, len(ids), batch):
        lens = lengths[i : i + batch]
        x = ids[i : i + batch, : int(lens.max())].to(device)
        lens = lens.to(device)
        eps = torch.randn(len(x), cfg.z_dim, generator=gen).to(device)
        logits, mu, logvar = model(x, lens, eps)
        tgt = targets(x, lens, cfg.eos)
        recon, kl, n = elbo_terms(logits, tgt, mu, logvar)
        total_recon += float(recon.sum())
        total_kl += float(kl.sum())
        symbols += float(n.sum())
        means.append(mu.float().cpu())
        greedy, ended = decode_from(model, mu, None, x.shape[1] + 1, _greedy)
        for r, row in enumerate(greedy):
            want = tgt[r][tgt[r] != -100].tolist()  # the characters, then EOS
            got = row + [cfg.eos] * ended[r]  # what greedy wrote, with its EOS
            correct += sum(a == b for a, b in zip(want, got, strict=False))
    n_sent = len(ids)
    return {
        "neg_elbo": (total_recon + total_kl) / symbols,
        "recon_nats": total_recon / symbols,
        "kl": total_kl / n_sent,
        "active_units": float(active_units(torch.cat(means))),
        "recon_accuracy": correct / symbols,
    }
