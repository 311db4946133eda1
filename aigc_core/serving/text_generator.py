"""MLflow pyfunc "model from code" for the character-level language models (charlstm,
transformer).

MLflow copies this file into the model and runs it at load time; the weights come back from a
safetensors file and a JSON config (which holds the vocabulary), so loading never unpickles
anything.

Request: a DataFrame with columns `prompt` (text; empty starts a new document), `max_new_tokens`
and `seed`; optional `temperature` (default 1.0, 0 is greedy), `top_k`, `top_p` and `stop` (a
stop string, or a list of them). One row per request.
Response: one row per request: `request`, `prompt`, `seed`, `text` (the continuation, without
the prompt and the stop string) and `finish_reason` ("length" or "stop").

Batches use `generate` (one seed per prompt, prompts of equal length sampled together) and
`score` (each text's mean nats per character under the model, given its prompt: the log of the
perplexity that curation bounds).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

# An empty prompt starts a new document: training joins documents with blank lines.
DOCUMENT_START = "\n"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class TextGenerator(PythonModel):
    def load_context(self, context):
        from aigc_core.models.io import load_model

        self.model = load_model(context.artifacts["weights"], context.artifacts["config"])
        self.vocab = self.model.cfg.vocab

    def context_ids(self, prompt: str):
        """(T,) token ids the model continues for `prompt`; raises ValueError naming characters
        outside the vocabulary."""
        from aigc_core.models.chars import encode

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
        from aigc_core.models.chars import encode

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

    def _device(self):
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
    ) -> list[tuple[str, str]]:
        """(continuation, finish_reason) per prompt. `seed`: one per prompt, or one for the
        request, from which prompt i gets its own (independent streams, so equal prompts get
        different texts). A prompt's text depends only on the model, the prompt, its seed and
        the sampling options, never on the other prompts. Prompts of equal length share
        batches."""
        import torch

        from aigc_core.generation.shards import shard_seed
        from aigc_core.generation.text import SamplingParams, TextSampling, sample_tokens
        from aigc_core.models.chars import decode

        TextSampling(max_new_tokens, temperature, top_k, top_p, tuple(stop))  # range checks
        if isinstance(seed, Sequence):
            seeds = [int(s) for s in seed]
        else:
            seeds = [shard_seed(int(seed), i) for i in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=self.stop_ids(stop),
        )
        block, device = self.model.cfg.block_size, self._device()

        def next_logits(ids: torch.Tensor) -> torch.Tensor:
            return self.model(ids[:, -block:].to(device))[0][:, -1].float().cpu()  # (B, V)

        contexts = [self.context_ids(p) for p in prompts]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(contexts):
            groups[len(ids)].append(i)
        out: list[tuple[str, str]] = [("", "")] * len(prompts)
        with torch.inference_mode():
            for members in groups.values():
                for j in range(0, len(members), batch_size):
                    rows = members[j : j + batch_size]
                    ids = torch.stack([contexts[i] for i in rows])  # (B, T)
                    sampled = sample_tokens(next_logits, ids, params, [seeds[i] for i in rows])
                    for i, s in zip(rows, sampled, strict=True):
                        out[i] = (decode(s.ids, self.vocab), s.finish_reason)
        return out

    def score(self, prompts: Sequence[str], texts: Sequence[str], batch_size: int = 256):
        """Mean nats per character of each text after its prompt under the model (NaN for an
        empty text); exp of it is the text's perplexity. The context is cropped to the model's
        block size, as in `generate`. Texts of equal total length share batches."""
        import torch

        from aigc_core.generation.text import token_logprobs
        from aigc_core.models.chars import encode

        if len(prompts) != len(texts):
            raise ValueError(f"got {len(prompts)} prompts for {len(texts)} texts")
        block, device = self.model.cfg.block_size, self._device()

        def forward(ids: torch.Tensor) -> torch.Tensor:
            return self.model(ids.to(device))[0].float().cpu()  # (B, T, V)

        contexts = [self.context_ids(p) for p in prompts]
        seqs = [torch.cat([c, encode(t, self.vocab)]) for c, t in zip(contexts, texts, strict=True)]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(seqs):
            groups[len(s)].append(i)
        out = [math.nan] * len(texts)
        with torch.inference_mode():
            for members in groups.values():
                for j in range(0, len(members), batch_size):
                    rows = members[j : j + batch_size]
                    logp = token_logprobs(forward, torch.stack([seqs[i] for i in rows]), block)
                    for r, i in enumerate(rows):
                        if texts[i]:  # logp[:, t-1] scores token t; the text starts after it
                            out[i] = float(-logp[r, len(contexts[i]) - 1 :].mean())
        return out

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = []
        for req, row in enumerate(model_input.to_dict("records")):
            temperature = row.get("temperature")
            top_k, top_p, stop = row.get("top_k"), row.get("top_p"), row.get("stop")
            if stop is None or isinstance(stop, float):  # missing in this row
                stop = ()
            ((text, reason),) = self.generate(
                [str(row["prompt"])],
                int(row["max_new_tokens"]),
                int(row["seed"]),
                1.0 if _missing(temperature) else float(temperature),
                None if _missing(top_k) else int(top_k),
                None if _missing(top_p) else float(top_p),
                (stop,) if isinstance(stop, str) else tuple(stop),
            )
            rows.append(
                {
                    "request": req,
                    "prompt": str(row["prompt"]),
                    "seed": int(row["seed"]),
                    "text": text,
                    "finish_reason": reason,
                }
            )
        return pd.DataFrame(rows)


set_model(TextGenerator())
