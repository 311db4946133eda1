"""Sentence-level variational autoencoder over characters.

References:
- Bowman, Vilnis, Vinyals, Dai, Jozefowicz, Bengio, "Generating Sentences from a Continuous
  Space" (2016), arXiv:1511.06349: recurrent encoder and decoder, a Gaussian latent code of the
  whole sentence, KL annealing and word dropout against posterior collapse.
- Kingma, Welling, "Auto-Encoding Variational Bayes" (2014), arXiv:1312.6114.
- Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders" (2016), arXiv:1509.00519:
  active units, Cov_x(E_q[z | x]) > 0.01.

Tokens: the characters of `cfg.vocab` (ids 0..V-1, `aigc_core.models.chars`) and three more:
EOS (V) ends a sentence (the decoder predicts V+1 classes: the characters and EOS; padding past
EOS is masked), BOS (V+1) starts the decoder's input, UNK (V+2) replaces the
characters of a dropped word in the decoder's input (word dropout, `aigc_core.training
.textvae`).

Encoder: Embedding -> GRU over the sentence -> last state -> Linear to (mu, logvar) (B, Z).
Decoder: z -> Linear -> tanh: the GRU's initial state; z is also fed beside every input
embedding (so the decoder cannot forget it over a long sentence) -> GRU -> Linear (H -> V+1).
No IO; sampling is `@torch.no_grad()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

import torch
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F

from aigc_core.config_types import CONFIG, DerivedStr, PositiveInt

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al.: a unit whose posterior mean varies less is inactive


@dataclass(frozen=True, config=CONFIG)
class TextVAEConfig:
    vocab: DerivedStr
    """the characters in id order (aigc_core.models.chars), filled in from the training text"""
    embed_dim: PositiveInt = 64
    hidden: PositiveInt = 256
    z_dim: PositiveInt = 32
    max_len: PositiveInt = 96
    """longest sentence in characters (EOS not counted): longer ones are not trained on, and
    decoding stops there"""

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def eos(self) -> int:
        return len(self.vocab)

    @property
    def bos(self) -> int:
        return len(self.vocab) + 1

    @property
    def unk(self) -> int:
        return len(self.vocab) + 2

    def to_dict(self) -> dict:
        return {"family": "textvae", **asdict(self)}


class TextVAE(nn.Module):
    def __init__(self, cfg: TextVAEConfig):
        super().__init__()
        self.cfg = cfg
        v = cfg.vocab_size
        self.embed = nn.Embedding(v + 3, cfg.embed_dim)  # characters, EOS, BOS, UNK
        self.encoder = nn.GRU(cfg.embed_dim, cfg.hidden, batch_first=True)
        self.to_stats = nn.Linear(cfg.hidden, 2 * cfg.z_dim)
        self.to_state = nn.Linear(cfg.z_dim, cfg.hidden)
        self.decoder = nn.GRU(cfg.embed_dim + cfg.z_dim, cfg.hidden, batch_first=True)
        self.head = nn.Linear(cfg.hidden, v + 1)  # characters and EOS

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) characters (padding past each row's length ignored), lengths (B,) >= 1 ->
        posterior mean and log-variance (B, Z)."""
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.encoder(packed)  # (1, B, H): each row's state after its last character
        mu, logvar = self.to_stats(h[0]).chunk(2, dim=-1)  # (B, Z) each
        return mu, logvar

    def decode(
        self, inputs: torch.Tensor, z: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs (B, T) (BOS first) and z (B, Z) -> logits (B, T, V+1) over the next
        token, and the GRU state (1, B, H) to continue from."""
        if state is None:
            state = torch.tanh(self.to_state(z))[None]  # (1, B, H)
        x = torch.cat([self.embed(inputs), z[:, None].expand(-1, inputs.shape[1], -1)], dim=-1)
        h, state = self.decoder(x, state)  # (B, T, H)
        return self.head(h), state

    def forward(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        eps: torch.Tensor,
        dec_inputs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (B, T) characters, lengths (B,), eps (B, Z) -> (logits (B, T+1, V+1), mu, logvar).
        The decoder reads `dec_inputs` (B, T+1) (default: BOS then the characters, the teacher-
        forced input; word dropout passes them with dropped words as UNK) at z = mu + sigma*eps."""
        mu, logvar = self.encode(ids, lengths)
        z = mu + torch.exp(0.5 * logvar) * eps
        if dec_inputs is None:
            dec_inputs = decoder_inputs(ids, self.cfg.bos)
        logits, _ = self.decode(dec_inputs, z)
        return logits, mu, logvar


def decoder_inputs(ids: torch.Tensor, bos: int) -> torch.Tensor:
    """(B, T) -> (B, T+1): BOS, then the characters (the decoder's teacher-forced input)."""
    return torch.cat([torch.full_like(ids[:, :1], bos), ids], dim=1)


def targets(ids: torch.Tensor, lengths: torch.Tensor, eos: int) -> torch.Tensor:
    """(B, T) characters -> (B, T+1) targets: the characters, EOS at each row's length, and -100
    (ignored) after it."""
    b, t = ids.shape
    out = torch.cat([ids, torch.full_like(ids[:, :1], -100)], dim=1)  # (B, T+1)
    pos = torch.arange(t + 1, device=ids.device)[None]  # (1, T+1)
    out = torch.where(pos < lengths[:, None], out, torch.full_like(out, -100))
    return out.scatter(1, lengths[:, None], eos)


def kl_per_unit(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per row and latent unit (B, Z), in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def elbo_terms(
    logits: torch.Tensor, tgt: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reconstruction nats per sentence (B,), KL nats per sentence (B,), symbols per sentence
    (B,): characters + EOS). The negative ELBO of a sentence is reconstruction + KL."""
    nll = F.cross_entropy(
        logits.float().transpose(1, 2), tgt, ignore_index=-100, reduction="none"
    )  # (B, T+1), 0 where ignored
    recon = nll.sum(dim=1)
    kl = kl_per_unit(mu.float(), logvar.float()).sum(dim=1)
    return recon, kl, (tgt != -100).sum(dim=1)


def kl_with_free_bits(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term the training loss uses, nats per sentence: each unit's batch-mean KL, raised
    to `free_bits` nats where below (Kingma et al. 2016, "Improved Variational Inference with
    Inverse Autoregressive Flow": the optimizer gains nothing by pushing a unit below it), summed
    over units. free_bits 0: the plain mean KL."""
    per_unit = kl_per_unit(mu.float(), logvar.float()).mean(dim=0)  # (Z,)
    if free_bits > 0:
        per_unit = per_unit.clamp(min=free_bits)
    return per_unit.sum()


def active_units(means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Burda et al.'s active units: latent dimensions whose posterior mean E_q[z | x] varies over
    the data, Cov_x(E_q[z_u | x]) > threshold. means (N, Z), N >= 2."""
    if means.ndim != 2 or means.shape[0] < 2:
        raise ValueError(
            f"active units need posterior means of >= 2 inputs (N, Z), got {tuple(means.shape)}"
        )
    return int((means.float().var(dim=0) > threshold).sum())


def kl_weight(step: int, schedule: str, anneal_steps: int) -> float:
    """The KL term's weight at `step` (0-based) under KL annealing (Bowman et al.): "linear"
    rises from 0 to 1 over `anneal_steps`; "sigmoid" is 1 / (1 + exp(-10 (step / anneal_steps -
    0.5))), 0.5 at half of them; "none" (or anneal_steps 0) is 1 throughout."""
    if schedule == "none" or anneal_steps <= 0:
        return 1.0
    if schedule == "linear":
        return min(1.0, step / anneal_steps)
    if schedule == "sigmoid":
        return 1.0 / (1.0 + math.exp(-10.0 * (step / anneal_steps - 0.5)))
    raise ValueError(f"unknown KL annealing schedule {schedule!r}; use linear, sigmoid or none")


Picker = Callable[[torch.Tensor], torch.Tensor]  # logits (B, V+1) -> token ids (B,)


@torch.no_grad()
def decode_from(
    model: TextVAE, z: torch.Tensor, prefix: torch.Tensor | None, max_new: int, pick: Picker
) -> tuple[list[list[int]], list[bool]]:
    """Decode from latent codes z (B, Z): teacher-force `prefix` (B, P) characters after BOS (or
    none), then up to `max_new` tokens chosen by `pick`; per row the new character ids (EOS
    excluded) and whether the row ended with EOS. Finished rows keep being fed (their output
    frozen) so the batch stays rectangular."""
    b = z.shape[0]
    bos = torch.full((b, 1), model.cfg.bos, dtype=torch.long, device=z.device)
    inputs = bos if prefix is None else torch.cat([bos, prefix.to(z.device)], dim=1)
    logits, state = model.decode(inputs, z)
    last = logits[:, -1].float()  # (B, V+1)
    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    for _ in range(max_new):
        tok = pick(last).to(z.device)  # (B,)
        for r in range(b):
            if done[r]:
                continue
            t = int(tok[r])
            if t == model.cfg.eos:
                done[r] = True
            else:
                out[r].append(t)
        if all(done):
            break
        logits, state = model.decode(tok[:, None], z, state)
        last = logits[:, -1].float()
    return out, done
