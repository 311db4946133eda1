"""The served text VAE interpolates (issue 16): a request row's prompt is the first sentence,
the params `interpolate_to` and `steps` ask for the path, and the response is the path, one row
per point, as `interpolate` decodes it; bad interpolation requests are refused by name."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from aigc_core import families
from aigc_core.generation import text_options
from aigc_core.generation.text_options import RequestError
from aigc_core.generation.textvae import (
    INTERPOLATION_PARAMS,
    MAX_INTERPOLATION_STEPS,
    PREDICT_PARAMS,
    TextVAEGenerator,
)
from aigc_core.models.textvae import TextVAE, TextVAEConfig

VOCAB = " .abcdefghijklmnopqrstuvwxyz"
A, B = "the cat sat.", "a dog ran far."


@pytest.fixture(scope="module")
def gen() -> TextVAEGenerator:
    """An untrained seeded tiny VAE: its texts are noise, but seeded noise."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TextVAEConfig(vocab=VOCAB, embed_dim=8, hidden=16, z_dim=4, max_len=20)
    return TextVAEGenerator(TextVAE(cfg))


def served(gen, prompts, **params) -> pd.DataFrame:
    """What MLflow hands `predict`: every param, its default where the request left it out."""
    return gen.predict(pd.DataFrame({"prompt": prompts}), {**PREDICT_PARAMS, **params})


def test_the_params_are_the_sampling_options_and_the_unset_interpolation():
    assert families.get("textvae").params_example == PREDICT_PARAMS
    assert PREDICT_PARAMS == {**text_options.PREDICT_PARAMS, "interpolate_to": "", "steps": 0}
    assert INTERPOLATION_PARAMS == {"interpolate_to": "", "steps": 0}  # typed defaults: unset


def test_a_served_interpolation_is_the_path_interpolate_decodes(gen):
    greedy = served(gen, [A], interpolate_to=B, steps=4, temperature=0.0)
    assert list(greedy.columns) == [
        "request",
        "prompt",
        "seed",
        "text",
        "finish_reason",
        "step",
        "t",
    ]
    assert list(zip(greedy["text"], greedy["finish_reason"], strict=True)) == gen.interpolate(
        A, B, 4
    )
    assert greedy["step"].tolist() == [0, 1, 2, 3]
    assert greedy["t"].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert (greedy["prompt"] == A).all() and (greedy["request"] == 0).all()
    # sampled: point j draws from stream j of the request's seed, as `interpolate` with it
    sampled = served(gen, [A], interpolate_to=B, steps=5, temperature=1.5, seed=7)
    path = gen.interpolate(A, B, 5, temperature=1.5, seed=7)
    assert list(zip(sampled["text"], sampled["finish_reason"], strict=True)) == path
    assert len(set(sampled["text"])) > 1  # the points differ: the test can tell them apart
    assert path != gen.interpolate(A, B, 5, temperature=1.5, seed=8)
    assert (sampled["seed"] == 7).all()


def test_each_row_answers_its_own_path_in_order(gen):
    out = served(gen, [A, B], interpolate_to="we go home now.", steps=3, temperature=0.0)
    assert out["request"].tolist() == [0, 0, 0, 1, 1, 1]
    assert out["step"].tolist() == [0, 1, 2] * 2
    assert out["text"].tolist()[3:] == [t for t, _ in gen.interpolate(B, "we go home now.", 3)]
    # a row may give the options as columns (the request shape before params): they win
    request = pd.DataFrame(
        {"prompt": [A, B], "interpolate_to": [None, A], "steps": [math.nan, 2.0]}
    )
    mixed = gen.predict(request, dict(PREDICT_PARAMS, temperature=0.0))
    assert mixed["request"].tolist() == [0, 1, 1]
    assert math.isnan(mixed["step"].iloc[0]) and mixed["step"].tolist()[1:] == [0, 1]
    assert mixed["text"].tolist()[1:] == [t for t, _ in gen.interpolate(B, A, 2)]


def test_a_request_without_interpolation_answers_as_before(gen):
    out = served(gen, ["", "the "], seed=3, max_new_tokens=10)
    assert list(out.columns) == ["request", "prompt", "seed", "text", "finish_reason"]
    plain = gen.predict(pd.DataFrame({"prompt": ["", "the "]}), {"seed": 3, "max_new_tokens": 10})
    pd.testing.assert_frame_equal(out, plain)
    # a row that opts out of the request's interpolation keeps its own prompt's continuation
    request = pd.DataFrame({"prompt": [A, "the "], "interpolate_to": [B, ""]})
    out = gen.predict(request, dict(PREDICT_PARAMS, steps=2, temperature=0.0))
    assert out["request"].tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    ("prompt", "params", "error"),
    [
        (A, {"interpolate_to": B, "steps": 1}, r"steps in params must lie in \[2, 256\]"),
        (A, {"interpolate_to": B, "steps": MAX_INTERPOLATION_STEPS + 1}, r"\[2, 256\]"),
        (A, {"interpolate_to": B}, r"steps in params must lie in \[2, 256\].*got 0"),
        (A, {"steps": 3}, "applies to an interpolation: give interpolate_to"),
        (A, {"interpolate_to": "   ", "steps": 3}, "interpolate_to in params is blank"),
        ("", {"interpolate_to": B, "steps": 3}, "from its prompt, which is blank"),
        (A, {"interpolate_to": 5, "steps": 3}, "interpolate_to in params must be a sentence"),
        (A, {"interpolate_to": B, "steps": 2.5}, "steps in params must be a whole number"),
        (A, {"interpolate_to": B, "steps": True}, "steps in params must be an integer"),
        (A, {"interpolate_to": B, "steps": 3, "temperature": -1.0}, "temperature in params"),
    ],
)
def test_bad_interpolation_requests_are_refused_by_name(gen, prompt, params, error):
    with pytest.raises(RequestError, match=error):
        served(gen, [prompt], **params)


def test_sentences_the_model_cannot_read_are_refused(gen, monkeypatch):
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        served(gen, [A], interpolate_to="The Cat.", steps=3)
    with pytest.raises(ValueError, match="longer than the sentences"):
        served(gen, [A], interpolate_to="a" * 21, steps=3)
    # a bad row fails the request before any row is generated: no work spent on a refusal
    calls = []
    monkeypatch.setattr(gen, "generate", lambda *a, **k: calls.append(a) or [])
    request = pd.DataFrame({"prompt": [A, A], "steps": [3, 1]})
    with pytest.raises(RequestError, match="steps in row 1"):
        gen.predict(request, dict(PREDICT_PARAMS, interpolate_to=B))
    assert calls == []
