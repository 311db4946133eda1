"""A text model's sampling options as the pyfunc request's `params` (`TextGenerator.predict`):
defaults, greedy determinism, sampling that follows temperature and seed, per-row columns that
still work, and errors that name the bad option. The image model takes no params."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from aigc_core import families
from aigc_core.generation.images import ImageGenerator
from aigc_core.generation.shards import shard_seed
from aigc_core.generation.text_options import PREDICT_PARAMS, RequestError
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab
from aigc_core.models.dcgan import DCGANConfig, Generator
from aigc_core.models.io import save_model

VOCAB = build_vocab("The quick brown fox.\n")
PROMPT = pd.DataFrame({"prompt": ["The "]})


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    torch.manual_seed(0)
    cfg = CharLSTMConfig(vocab=VOCAB, embed_dim=8, hidden=16, block_size=8)
    paths = save_model(tmp_path_factory.mktemp("lm"), CharLSTM(cfg), cfg.to_dict())
    return families.get("charlstm").load_generator(paths["weights"], paths["config"])


def texts(gen, params=None, request=PROMPT) -> list[str]:
    return gen.predict(request, params)["text"].tolist()


def test_the_family_params_are_the_defaults_predict_applies(gen):
    assert dict(families.get("charlstm").params_example) == PREDICT_PARAMS
    out = gen.predict(PROMPT)
    assert len(out["text"].iloc[0]) == PREDICT_PARAMS["max_new_tokens"]
    assert out["seed"].iloc[0] == PREDICT_PARAMS["seed"]
    assert texts(gen) == texts(gen, dict(PREDICT_PARAMS))  # what MLflow fills in: the same


def test_temperature_zero_is_greedy_and_deterministic(gen):
    greedy = texts(gen, {"temperature": 0, "max_new_tokens": 20})
    assert greedy == texts(gen, {"temperature": 0, "max_new_tokens": 20})
    assert greedy == texts(gen, {"temperature": 0, "max_new_tokens": 20, "seed": 9})
    ((want, _),) = gen.generate(["The "], 20, seed=0, temperature=0)
    assert greedy == [want]


def test_sampling_follows_temperature_and_seed(gen):
    hot = {"temperature": 1.5, "max_new_tokens": 20}
    assert texts(gen, hot) == texts(gen, hot)  # same seed, same text
    assert texts(gen, hot) != texts(gen, {**hot, "seed": 1})
    assert texts(gen, hot) != texts(gen, {"temperature": 0, "max_new_tokens": 20})
    # top_k 1 keeps only the likeliest token: greedy whatever the temperature
    assert texts(gen, {**hot, "top_k": 1}) == texts(gen, {"temperature": 0, "max_new_tokens": 20})
    ((want, _),) = gen.generate(["The "], 20, [shard_seed(0, 0)], temperature=1.5, top_p=0.9)
    assert texts(gen, {**hot, "top_p": 0.9}) == [want]


def test_rows_of_one_request_draw_their_own_streams(gen):
    two = pd.DataFrame({"prompt": ["The ", "The "]})
    out = gen.predict(two, {"temperature": 1.5, "max_new_tokens": 20, "seed": 4})
    assert out["text"].iloc[0] != out["text"].iloc[1]  # equal prompts, different texts
    assert out["seed"].tolist() == [4, 4] and out["request"].tolist() == [0, 1]


def test_stop_cuts_the_text(gen):
    greedy = texts(gen, {"temperature": 0, "max_new_tokens": 30})[0]
    stop = greedy[5:7]
    out = gen.predict(PROMPT, {"temperature": 0, "max_new_tokens": 30, "stop": [stop]})
    assert out["text"].iloc[0] == greedy[: greedy.find(stop)]
    assert out["finish_reason"].iloc[0] == "stop"


def test_a_column_still_works_and_wins_for_its_row(gen):
    old = pd.DataFrame(  # the request shape before params: options as columns
        {"prompt": ["The ", "The "], "max_new_tokens": [12, 12], "seed": [3, 3]}
    )
    out = gen.predict(old)
    ((want, _),) = gen.generate(["The "], 12, 3)
    assert out["text"].tolist() == [want, want] and out["seed"].tolist() == [3, 3]
    mixed = pd.DataFrame({"prompt": ["The ", "The "], "temperature": [0.0, None]})
    out = gen.predict(mixed, {"temperature": 1.5, "max_new_tokens": 10})
    assert out["text"].iloc[0] == texts(gen, {"temperature": 0, "max_new_tokens": 10})[0]
    assert out["text"].iloc[1] != out["text"].iloc[0]  # no value in its row: the params' 1.5


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": -0.5}, r"temperature in params must be >= 0 \(0 is greedy\), got -0.5"),
        ({"temperature": "hot"}, r"temperature in params must be a number, got 'hot'"),
        ({"temperature": float("nan")}, r"temperature in params must be a finite number"),
        ({"top_p": 0.0}, r"top_p in params must lie in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p in params must lie in \(0, 1\]"),
        ({"top_k": -1}, r"top_k in params must be >= 0"),
        ({"top_k": 2.5}, r"top_k in params must be a whole number, got 2.5"),
        ({"max_new_tokens": 0}, r"max_new_tokens in params must lie in \[1, 4096\], got 0"),
        ({"seed": -1}, r"seed in params must be >= 0, got -1"),
        ({"seed": True}, r"seed in params must be an integer, got True"),
        ({"stop": [""]}, r"stop in params must be a list of non-empty strings"),
        ({"stop": [3]}, r"stop in params must be a list of non-empty strings"),
        ({"temprature": 0}, r"unknown option 'temprature' in params: the options are"),
    ],
)
def test_bad_params_are_refused_naming_the_option(gen, params, message):
    with pytest.raises(RequestError, match=message):
        gen.predict(PROMPT, params)


def test_bad_columns_name_the_row(gen):
    rows = pd.DataFrame({"prompt": ["The ", "The "], "top_p": [0.5, 2.0]})
    with pytest.raises(RequestError, match=r"top_p in row 1 must lie in \(0, 1\] .*, got 2.0"):
        gen.predict(rows)
    with pytest.raises(RequestError, match="needs a 'prompt' column"):
        gen.predict(pd.DataFrame({"text": ["The "]}))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        gen.predict(PROMPT, {"stop": ["Z"]})


def test_an_image_model_takes_labels_only(tmp_path):
    torch.manual_seed(0)
    cfg = DCGANConfig(z_dim=8, g_width=4, d_width=4)
    paths = save_model(tmp_path, Generator(cfg), cfg.to_dict())
    gen = families.get("dcgan").load_generator(paths["weights"], paths["config"])
    assert isinstance(gen, ImageGenerator)
    assert families.get("dcgan").params_example == {"labels": ""}
    request = pd.DataFrame({"n": [2], "seed": [0]})
    out = gen.predict(request, None)
    assert out["png_base64"].tolist() == gen.predict(request, {"labels": ""})["png_base64"].tolist()
    assert out["label"].tolist() == [-1, -1]  # none asked
    with pytest.raises(ValueError, match=r"seed cannot be a param: give n and seed as columns"):
        gen.predict(request, {"seed": 1})
    with pytest.raises(ValueError, match=r"asked of an unconditional model"):
        gen.predict(request, {"labels": "7"})
