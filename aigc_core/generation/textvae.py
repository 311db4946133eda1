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

Served (`predict`), a request row is the text families' (`TextGenerator.predict`), and also
interpolates: with the params (or the row's columns) `interpolate_to`, a second sentence, and
`steps` K (`PREDICT_PARAMS`), the row answers K rows, the path from its prompt to that sentence,
`interpolate(prompt, interpolate_to, K, temperature, seed)` under the request's options (a
deterministic path needs temperature 0, which `aigc generate --interpolate` defaults to; MLflow
fills in the request's default, 1.0), each with its `step` (0..K-1) and `t` = step / (K - 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch.nn import functional as F

from aigc_core.generation import text_options
from aigc_core.generation.text import (
    RequestRow,
    TextBatch,
    TextGenerator,
    cut_at_stop,
    missing,
    next_token,
    request_rows,
)
from aigc_core.generation.text_options import (
    LatentPoint,
    RequestError,
    interpolation_points,
    request_number,  # a request option's number check, shared with the sampling options'
)
from aigc_core.models.chars import decode, encode
from aigc_core.models.textvae import TextVAE, decode_from, decoder_inputs

# The served model's interpolation options, beside the sampling options: an MLflow param needs a
# default of its type, and MLflow fills it in where a request leaves the param out, so these
# defaults mean "not asked" (as the diffusion family's guidance -1.0 and sampling_steps 0 mean
# "the model's default"): "" no second sentence, 0 no steps.
INTERPOLATION_PARAMS: dict[str, Any] = {"interpolate_to": "", "steps": 0}
MAX_INTERPOLATION_STEPS = 256  # points on one served path: bounds a request's time
PREDICT_PARAMS: dict[str, Any] = {**text_options.PREDICT_PARAMS, **INTERPOLATION_PARAMS}


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


class TextVAEGenerator(TextGenerator):
    """A trained sentence VAE ready to sample, interpolate and score: a `TextGenerator` (its
    checks, batches, stop strings and request rows) whose batches are decoded from latent codes;
    `predict` also interpolates (see the module docstring)."""

    model: TextVAE

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

    def sample_batch(self, batch: TextBatch) -> list[tuple[str, str]]:
        """(text, finish_reason) per prompt of one batch of `generate` (see the module
        docstring): z from each row's seed or its `LatentPoint`, the contexts (of one length)
        teacher-forced, stop strings cut from the text. `batch.cache` changes nothing: the GRU
        decoder always carries its state."""
        cfg, device, params = self.model.cfg, self._device(), batch.params
        gens = [torch.Generator().manual_seed(s) for s in batch.seeds]
        z = torch.stack(
            [
                self.latent_point(p)
                if isinstance(p, LatentPoint)
                else torch.randn(cfg.z_dim, generator=g)
                for p, g in zip(batch.prompts, gens, strict=True)
            ]
        ).to(device)  # (B, Z)
        context = len(batch.contexts[0])
        prefix = torch.stack(batch.contexts) if context else None
        room = max(1, min(params.max_new_tokens, cfg.max_len + 1 - context))
        new, ended = decode_from(
            self.model, z, prefix, room, lambda lg: next_token(lg.cpu(), params, gens)
        )
        out = []
        for r in range(len(batch.prompts)):
            text, cut = cut_at_stop(decode(new[r], self.vocab), batch.stop)
            out.append((text, "stop" if cut else "eos" if ended[r] else "length"))
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
        """The text families' request and response (`TextGenerator.predict`); a row that asks
        for an interpolation (`interpolation_request`) answers its path, one row per point, in
        order, with `step` and `t` (empty in the other rows of a request that mixes them)."""
        given = dict(params or {})
        asked = {k: given.pop(k) for k in INTERPOLATION_PARAMS if k in given}
        rows = request_rows(request, given)
        paths = [interpolation_request(row, asked) for row in rows]  # all checked first
        out = []
        for row, path in zip(rows, paths, strict=True):
            if path is None:
                out.append(row.answer(*self.sample_row(row)))
                continue
            target, steps = path
            opts = row.options
            points = interpolation_points(row.prompt, target, steps)
            texts = self.generate(
                points,
                opts["max_new_tokens"],
                opts["seed"],  # point j: stream j of the row's seed, as `interpolate`
                opts["temperature"],
                opts["top_k"] or None,  # 0: every token
                opts["top_p"],
                opts["stop"],
            )
            for j, (point, answer) in enumerate(zip(points, texts, strict=True)):
                out.append({**row.answer(*answer), "step": j, "t": point.t})
        return pd.DataFrame(out)


def interpolation_request(row: RequestRow, params: Mapping[str, Any]) -> tuple[str, int] | None:
    """The interpolation a request row asks for, (second sentence, steps), or None: the
    request's params `interpolate_to` and `steps` (`INTERPOLATION_PARAMS`; their defaults, "" and
    0, ask for none), the row's own value where it gives one. A RequestError names the option
    and where it came from: a type, steps out of [2, MAX_INTERPOLATION_STEPS], steps without a
    sentence or a sentence without steps, a blank sentence (the row's prompt is the first)."""
    got: dict[str, tuple[Any, str]] = {}
    for name, unset in INTERPOLATION_PARAMS.items():
        value, where = params.get(name, unset), "in params"
        if name in row.values and not missing(row.values[name]):
            value, where = row.values[name], f"in row {row.index}"
        got[name] = value, where
    (target, t_where), (steps, s_where) = got["interpolate_to"], got["steps"]
    if not isinstance(target, str):
        raise RequestError(f"interpolate_to {t_where} must be a sentence (text), got {target!r}")
    steps = request_number("steps", steps, s_where, integer=True)
    if target == "":  # no interpolation; a row that opts out keeps the request's steps
        if steps != 0 and not (t_where != "in params" and s_where == "in params"):
            raise RequestError(
                f"steps {s_where} ({steps}) applies to an interpolation: give interpolate_to, "
                "the sentence the path ends at (or leave steps out)"
            )
        return None
    if not target.strip():
        raise RequestError(f"interpolate_to {t_where} is blank: give a sentence")
    if not row.prompt.strip():
        raise RequestError(
            f"row {row.index} asks to interpolate to {target!r} from its prompt, which is "
            "blank: the prompt is the sentence the path starts at"
        )
    if not 2 <= steps <= MAX_INTERPOLATION_STEPS:
        raise RequestError(
            f"steps {s_where} must lie in [2, {MAX_INTERPOLATION_STEPS}] (the points on the "
            f"path, both ends included) when interpolate_to is given, got {steps}"
        )
    return target, steps
