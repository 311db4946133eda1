"""The language models' pyfunc class, run as serving runs it (without MLflow's loader)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab
from aigc_core.models.io import save_model
from aigc_core.models.transformer import TransformerConfig, TransformerLM
from aigc_core.serving import pyfunc_file
from aigc_core.serving.text_generator import TextGenerator

VOCAB = build_vocab("abcdefghij .")


@pytest.fixture(params=["charlstm", "transformer"])
def served(request, tmp_path):
    torch.manual_seed(0)
    if request.param == "charlstm":
        cfg = CharLSTMConfig(vocab=VOCAB, embed_dim=8, hidden=16, block_size=8)
        module = CharLSTM(cfg)
    else:
        cfg = TransformerConfig(vocab=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=8)
        module = TransformerLM(cfg)
    paths = save_model(tmp_path, module, cfg.to_dict())
    m = TextGenerator()
    m.load_context(SimpleNamespace(artifacts={k: str(v) for k, v in paths.items()}))
    return request.param, m


def test_predict_is_seeded_and_stays_in_the_vocabulary(served):
    family, m = served
    assert pyfunc_file(family).name == "text_generator.py"
    req = pd.DataFrame({"prompt": ["abc", "j."], "max_new_tokens": [12, 5], "seed": [1, 2]})
    out = m.predict(None, req)
    assert list(out["request"]) == [0, 1] and list(out["prompt"]) == ["abc", "j."]
    assert [len(t) for t in out["text"]] == [12, 5]  # longer than block_size: context cropped
    assert all(set(t) <= set(VOCAB) for t in out["text"])
    again = m.predict(None, req)
    assert again["text"].tolist() == out["text"].tolist()
    greedy = m.generate(["abc"], 6, seed=0, temperature=0)
    assert greedy == m.generate(["abc"], 6, seed=99, temperature=0)  # greedy ignores the seed


def test_bad_requests_are_refused(served):
    _, m = served
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        m.generate(["xyz"], 4, seed=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate(["abc"], 0, seed=0)
