"""MLflow pyfunc "model from code" for the character-level language models (charlstm,
transformer).

MLflow copies this file into the model and runs it at load time; the weights come back from a
safetensors file and a JSON config (which holds the vocabulary), so loading never unpickles
anything.

Request: a DataFrame with columns `prompt` (text), `max_new_tokens` and `seed`; optional
`temperature` (default 1.0, 0 is greedy) and `top_k`. One row per request.
Response: one row per request: `request`, `prompt`, `seed`, `text` (the continuation, without
the prompt) and `finish_reason`.
"""

from __future__ import annotations

import math

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

MAX_NEW_TOKENS = 4096


class TextGenerator(PythonModel):
    def load_context(self, context):
        from aigc_core.models.io import load_model

        self.model = load_model(context.artifacts["weights"], context.artifacts["config"])
        self.vocab = self.model.cfg.vocab

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int,
        seed: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> list[tuple[str, str]]:
        """(continuation, finish_reason) per prompt; the same inputs give the same text.
        Prompts of different lengths run one by one; equal lengths share a batch."""
        import torch

        from aigc_core.generation.text import SamplingParams, sample_tokens
        from aigc_core.models.chars import decode, encode

        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(
                f"max_new_tokens must lie in [1, {MAX_NEW_TOKENS}], got {max_new_tokens}"
            )
        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p
        )
        block = self.model.cfg.block_size
        device = next(self.model.parameters()).device

        def next_logits(ids: torch.Tensor) -> torch.Tensor:
            return self.model(ids[:, -block:].to(device))[0][:, -1].float().cpu()  # (B, V)

        out = []
        for p in prompts:
            if not p:
                raise ValueError("prompt must not be empty")
            ids = encode(p, self.vocab)[None]  # (1, T)
            with torch.inference_mode():
                (s,) = sample_tokens(next_logits, ids, params, seed)
            out.append((decode(s.ids, self.vocab), s.finish_reason))
        return out

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = []
        for req, row in enumerate(model_input.to_dict("records")):
            temperature = float(row.get("temperature", 1.0))
            top_k = row.get("top_k")
            top_k = (
                None
                if top_k is None or (isinstance(top_k, float) and math.isnan(top_k))
                else int(top_k)
            )
            ((text, reason),) = self.generate(
                [str(row["prompt"])],
                int(row["max_new_tokens"]),
                int(row["seed"]),
                temperature,
                top_k,
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
