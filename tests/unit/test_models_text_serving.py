"""The language models' generator (`TextGenerator`), loaded through its family as the served
pyfunc model loads it (without MLflow's loader)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from aigc_core import families
from aigc_core.generation.shards import shard_seed
from aigc_core.generation.text import TextGenerator
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab, encode
from aigc_core.models.io import save_model
from aigc_core.models.transformer import TransformerConfig, TransformerLM

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
    m = families.get(request.param).load_generator(paths["weights"], paths["config"])
    return request.param, m


def test_predict_is_seeded_and_stays_in_the_vocabulary(served):
    family, m = served
    assert isinstance(m, TextGenerator) and families.get(family).kind == "text"
    req = pd.DataFrame({"prompt": ["abc", "j."], "max_new_tokens": [12, 5], "seed": [1, 2]})
    out = m.predict(req)
    assert list(out["request"]) == [0, 1] and list(out["prompt"]) == ["abc", "j."]
    assert [len(t) for t in out["text"]] == [12, 5]  # longer than block_size: context cropped
    assert all(set(t) <= set(VOCAB) for t in out["text"])
    again = m.predict(req)
    assert again["text"].tolist() == out["text"].tolist()
    greedy = m.generate(["abc"], 6, seed=0, temperature=0)
    assert greedy == m.generate(["abc"], 6, seed=99, temperature=0)  # greedy ignores the seed


def test_bad_requests_are_refused(served):
    _, m = served
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        m.generate(["xyz"], 4, seed=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate(["abc"], 0, seed=0)


def test_each_prompt_has_its_own_seed_and_batches_do_not_change_texts(served):
    _, m = served
    prompts, seeds = ["abc", "j.", "abc", "hij"], [3, 4, 5, 6]
    batch = m.generate(prompts, 10, seeds, temperature=1.2, top_p=0.95)
    kw = dict(temperature=1.2, top_p=0.95)
    alone = [m.generate([p], 10, [s], **kw)[0] for p, s in zip(prompts, seeds, strict=True)]
    assert batch == alone
    assert batch[0] != batch[2]  # same prompt, different seed
    # one seed for the request: each prompt gets its own, derived from it by position
    derived = [m.generate([p], 10, [shard_seed(7, i)])[0] for i, p in enumerate(prompts)]
    assert m.generate(prompts, 10, 7) == derived


def test_stop_strings_cut_the_text(served):
    _, m = served
    greedy, reason = m.generate(["abc"], 20, 0, temperature=0)[0]
    assert reason == "length" and len(greedy) == 20
    stop = greedy[6:8]
    text, reason = m.generate(["abc"], 20, 0, temperature=0, stop=[stop, "."])[0]
    cut = min(i for i in (greedy.find(stop), greedy.find(".")) if i != -1)
    assert (text, reason) == (greedy[:cut], "stop")
    with pytest.raises(ValueError, match="outside the model's vocabulary.*never writes it"):
        m.generate(["abc"], 4, 0, stop=["\n"])


def test_score_is_the_mean_nats_per_character_given_the_prompt(served):
    _, m = served
    prompts, texts = ["abc", "j", "abc"], ["defghij.ab", "", "a"]
    nats = m.score(prompts, texts)
    assert np.isnan(nats[1]) and all(np.isfinite([nats[0], nats[2]]))
    block = m.model.cfg.block_size
    for p, t, got in ((prompts[0], texts[0], nats[0]), (prompts[2], texts[2], nats[2])):
        ids = encode(p + t, VOCAB)
        want = []
        for pos in range(len(p), len(ids)):  # each character from the last `block` before it
            ctx = ids[max(0, pos - block) : pos][None]
            with torch.no_grad():
                logp = torch.log_softmax(m.model(ctx)[0][0, -1].float(), -1)
            want.append(-float(logp[ids[pos]]))
        assert got == pytest.approx(np.mean(want), rel=1e-4)
    assert m.score(["ab"], ["cdefghij.a"])[0] != pytest.approx(m.score(["j"], ["cdefghij.a"])[0])


def test_empty_prompts_need_a_newline_in_the_vocabulary(served, tmp_path):
    family, m = served
    with pytest.raises(ValueError, match="empty prompt starts a new document"):
        m.generate([""], 4, 0)
    vocab = build_vocab("abc \n")
    torch.manual_seed(1)
    cfg = CharLSTMConfig(vocab=vocab, embed_dim=8, hidden=16, block_size=8)
    paths = save_model(tmp_path / "nl", CharLSTM(cfg), cfg.to_dict())
    m2 = families.get("charlstm").load_generator(paths["weights"], paths["config"])
    ((text, _),) = m2.generate([""], 5, 0)
    assert len(text) == 5 and np.isfinite(m2.score([""], [text])[0])


def test_predict_takes_optional_sampling_columns(served):
    _, m = served
    req = pd.DataFrame(
        {
            "prompt": ["abc", "abc"],
            "max_new_tokens": [8, 8],
            "seed": [1, 1],
            "temperature": [0.0, None],
            "top_p": [None, 0.5],
            "stop": [".", None],
        }
    )
    out = m.predict(req)
    assert out["text"].iloc[0] == m.generate(["abc"], 8, 1, temperature=0, stop=["."])[0][0]
    assert out["text"].iloc[1] == m.generate(["abc"], 8, 1, top_p=0.5)[0][0]
