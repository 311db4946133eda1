"""Generating with the sentence VAE (`aigc_core.models.textvae`): the text generator protocol
(`aigc_core.families.base`) over a latent space.

- An empty prompt samples the prior: z ~ N(0, I) from the item's seed, decoded from BOS.
- A prompt is continued: z from the prior (the item's seed), the prompt teacher-forced after BOS,
  then sampled until EOS. (Encoding the prompt for z would ask for a sentence that is the
  prompt, and end there: the posterior of a fragment is the fragment.)
- A `LatentPoint` prompt (`aigc_core.generation.text_options`, an interpolation batch's item)
  is decoded from the point a fraction t of the way between the posterior means of its two
  sentences (`interpolate`: linear, or spherical with `slerp`); with temperature 0 the path is
  deterministic.

Tokens are chosen by `aigc_core.generation.text.next_token` (temperature, top-k, top-p; one
generator per row, so a row's text depends only on its own seed and prompt). Stop strings cut
the text (finish reason "stop"); EOS ends it ("eos"); else "length". `score` is the mean
reconstruction nats per character of a text given its prompt, at the posterior mean of the
whole sentence (prompt + text): a bound below the sentence's true per-character NLL.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch.nn import functional as F

from aigc_core.generation.shards import shard_seed
from aigc_core.generation.text import TextGenerator, cut_at_stop, next_token
from aigc_core.generation.text_options import (
    LatentPoint,
    SamplingParams,
    TextSampling,
    interpolation_points,
)
from aigc_core.models.chars import decode, encode
from aigc_core.models.textvae import TextVAE, decode_from, decoder_inputs


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two vectors (Z,) (White 2016, "Sampling Generative Networks");
    linear where they are (nearly) parallel."""
    cos = F.cosine_similarity(a, b, dim=0).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if float(omega.sin().abs()) < 1e-6:
        return lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


class TextVAEGenerator:
    """A trained sentence VAE ready to sample, interpolate and score; `predict` is the text
    families' request and response (`TextGenerator.predict`: a `prompt` column, the sampling
    options as params)."""

    def __init__(self, model: TextVAE):
        self.model = model.eval()
        self.vocab: str = model.cfg.vocab

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def context_ids(self, prompt: str) -> torch.Tensor:
        """(T,) character ids of the prompt the decoder is teacher-forced on (empty: none); the
        sentences of a `LatentPoint`, checked, and no prompt. A ValueError names characters
        outside the vocabulary or a prompt past the model's sentence length."""
        if isinstance(prompt, LatentPoint):
            for s in (prompt.a, prompt.b):
                self._sentence_ids(s)
            return torch.zeros(0, dtype=torch.long)
        if len(prompt) > self.model.cfg.max_len:
            raise ValueError(
                f"prompt of {len(prompt)} characters is longer than the sentences this model "
                f"writes (max_len {self.model.cfg.max_len}): shorten it"
            )
        return encode(prompt, self.vocab)

    def _sentence_ids(self, sentence: str) -> torch.Tensor:
        if not sentence:
            raise ValueError("cannot interpolate from an empty sentence: give two sentences")
        return self.context_ids(sentence)

    def stop_ids(self, stop: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        """Stop strings as character ids; one the model can never write is an error."""
        return TextGenerator.stop_ids(self, stop)  # the same check: characters of the vocab

    @torch.no_grad()
    def posterior_means(self, sentences: Sequence[str]) -> torch.Tensor:
        """(N, Z) posterior means E_q[z | x] of non-empty sentences."""
        rows = [self._sentence_ids(s) for s in sentences]
        lengths = torch.tensor([len(r) for r in rows])
        ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        mu, _ = self.model.encode(ids.to(self._device()), lengths)
        return mu.float()

    def latent_point(self, point: LatentPoint, spherical: bool = False) -> torch.Tensor:
        """(Z,) the code of an interpolation point: between its sentences' posterior means."""
        mu = self.posterior_means([point.a, point.b])
        return (slerp if spherical else lerp)(mu[0], mu[1], point.t)

    def interpolate(
        self, a: str, b: str, steps: int, temperature: float = 0.0, seed: int = 0
    ) -> list[tuple[str, str]]:
        """`steps` sentences decoded from points evenly spaced from a's posterior mean to b's
        (greedy by default: a deterministic path)."""
        points = interpolation_points(a, b, steps)
        return self.generate(points, self.model.cfg.max_len + 1, seed, temperature)

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
    ) -> list[tuple[str, str]]:
        """(text, finish_reason) per prompt (see the module docstring); `seed`: one per prompt
        or one for the request, from which prompt i gets its own stream."""
        TextSampling(max_new_tokens, temperature, top_k, top_p, tuple(stop))  # range checks
        self.stop_ids(stop)
        if isinstance(seed, Sequence):
            seeds = [int(s) for s in seed]
        else:
            seeds = [shard_seed(int(seed), i) for i in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p
        )
        cfg, device = self.model.cfg, self._device()
        contexts = [self.context_ids(p) for p in prompts]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(contexts):
            groups[len(ids)].append(i)
        out: list[tuple[str, str]] = [("", "")] * len(prompts)
        for members in groups.values():
            for j in range(0, len(members), batch_size):
                rows = members[j : j + batch_size]
                gens = [torch.Generator().manual_seed(seeds[i]) for i in rows]
                z = torch.stack(
                    [
                        self.latent_point(prompts[i])
                        if isinstance(prompts[i], LatentPoint)
                        else torch.randn(cfg.z_dim, generator=g)
                        for i, g in zip(rows, gens, strict=True)
                    ]
                ).to(device)  # (B, Z)
                prefix = (
                    torch.stack([contexts[i] for i in rows]) if len(contexts[rows[0]]) else None
                )
                room = max(1, min(max_new_tokens, cfg.max_len + 1 - len(contexts[rows[0]])))
                new, ended = decode_from(
                    self.model, z, prefix, room, lambda lg, g=gens: next_token(lg.cpu(), params, g)
                )
                for r, i in enumerate(rows):
                    text, cut = cut_at_stop(decode(new[r], self.vocab), stop)
                    out[i] = (text, "stop" if cut else "eos" if ended[r] else "length")
        return out

    @torch.no_grad()
    def score(
        self, prompts: Sequence[str], texts: Sequence[str], batch_size: int = 256
    ) -> list[float]:
        """Mean reconstruction nats per character of each text after its prompt, at the
        posterior mean of prompt + text (NaN for an empty text)."""
        if len(prompts) != len(texts):
            raise ValueError(f"got {len(prompts)} prompts for {len(texts)} texts")
        cfg, device = self.model.cfg, self._device()
        out = [math.nan] * len(texts)
        todo = [i for i, t in enumerate(texts) if t]
        for j in range(0, len(todo), batch_size):
            rows = todo[j : j + batch_size]
            heads = [self.context_ids(prompts[i]) for i in rows]
            seqs = [
                torch.cat([h, encode(texts[i], self.vocab)])
                for h, i in zip(heads, rows, strict=True)
            ]
            lengths = torch.tensor([len(s) for s in seqs])
            ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = s
            ids = ids.to(device)
            mu, _ = self.model.encode(ids, lengths)
            logits, _ = self.model.decode(decoder_inputs(ids, cfg.bos), mu)  # (B, T+1, V+1)
            logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T, V+1) predicts ids
            tok = logp.gather(-1, ids[..., None]).squeeze(-1).cpu()  # (B, T)
            for r, i in enumerate(rows):
                out[i] = float(-tok[r, len(heads[r]) : int(lengths[r])].mean())
        return out

    def predict(
        self, request: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """The text families' request and response (`TextGenerator.predict`)."""
        return TextGenerator.predict(self, request, params)
