"""Per-row seeds, token log-probabilities, text sampling options and prompt files."""

from __future__ import annotations

import math

import pytest
import torch

from aigc_core.generation.text import sample_tokens, token_logprobs
from aigc_core.generation.text_options import (
    MAX_NEW_TOKENS,
    PromptFileError,
    SamplingParams,
    TextSampling,
    load_prompts,
)


def uniform(ids: torch.Tensor) -> torch.Tensor:
    return torch.zeros(ids.shape[0], 30)  # (B, V)


def test_per_row_seeds_make_a_row_independent_of_its_batch():
    p = SamplingParams(max_new_tokens=12, top_k=25)
    prompts = torch.zeros(3, 2, dtype=torch.long)
    batch = sample_tokens(uniform, prompts, p, seed=[5, 6, 7])
    alone = [sample_tokens(uniform, prompts[:1], p, seed=[s])[0] for s in (5, 6, 7)]
    assert batch == alone
    assert sample_tokens(uniform, prompts[:2], p, seed=[7, 5]) == [batch[2], batch[0]]
    assert len({tuple(b.ids) for b in batch}) == 3
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        sample_tokens(uniform, prompts, p, seed=[1, 2])


def test_stop_sequence_is_found_when_it_completes():
    def counting(ids):  # next token = last + 1 (mod 6), with near certainty
        return torch.nn.functional.one_hot((ids[:, -1] + 1) % 6, 6).float() * 20.0

    p = SamplingParams(max_new_tokens=20, stop=((3, 4, 5), (4,)))
    (out,) = sample_tokens(counting, torch.tensor([[0]]), p, seed=[0])
    assert (out.ids, out.finish_reason) == ([1, 2, 3], "stop")  # "4" completes first
    p = SamplingParams(max_new_tokens=20, stop=((2, 3), (1, 2, 3)))
    (out,) = sample_tokens(counting, torch.tensor([[0]]), p, seed=[0])
    assert (out.ids, out.finish_reason) == ([], "stop")  # both end at 3: the earlier start


class Bigram(torch.nn.Module):
    """A causal toy model whose logits depend on the last two tokens: log-probs are checkable
    position by position."""

    def __init__(self, vocab: int = 7):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(vocab, vocab, vocab, generator=g)

    def forward(self, ids):  # (B, T) -> (B, T, V)
        prev = torch.cat([ids[:, :1], ids[:, :-1]], dim=1)
        return self.table[prev, ids]


@pytest.mark.parametrize("length", [1, 3, 5, 6, 9])
def test_token_logprobs_match_position_by_position_scoring(length):
    model, block = Bigram(), 5
    ids = torch.randint(0, 7, (2, length), generator=torch.Generator().manual_seed(length))
    got = token_logprobs(model, ids, block, chunk=2)
    assert got.shape == (2, length - 1)
    for t in range(1, length):  # the sampler's view: the last `block` tokens before t
        ctx = ids[:, max(0, t - block) : t]
        want = torch.log_softmax(model(ctx)[:, -1], dim=-1).gather(-1, ids[:, t : t + 1])
        torch.testing.assert_close(got[:, t - 1], want.squeeze(-1))


def test_text_sampling_options_are_checked():
    ok = TextSampling(max_new_tokens=10, temperature=0.7, top_k=5, top_p=0.9, stop=["\n"])
    assert ok.to_dict()["stop"] == ["\n"] and TextSampling(**ok.to_dict()) == ok
    for bad, match in (
        (dict(max_new_tokens=0), "max_new_tokens must lie in"),
        (dict(max_new_tokens=MAX_NEW_TOKENS + 1), "max_new_tokens must lie in"),
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(temperature=math.inf), "temperature must be a finite"),
        (dict(top_k=0), "top_k must be >= 1"),
        (dict(top_p=1.5), r"top_p must lie in \(0, 1\]"),
        (dict(stop=[""]), "stop sequences must be non-empty"),
        (dict(stop="END"), "list of strings"),
    ):
        with pytest.raises(ValueError, match=match):
            TextSampling(**bad)


def test_prompt_files(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_bytes("\ufeffOnce upon \r\n\n  \nThe cat\n".encode())
    assert load_prompts(f) == ["Once upon ", "The cat"]  # BOM, CRLF and blank lines dropped
    with pytest.raises(PromptFileError, match="no such file"):
        load_prompts(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n \n\t\n")
    with pytest.raises(PromptFileError, match="has no prompts"):
        load_prompts(tmp_path / "blank.txt")
    (tmp_path / "latin1.txt").write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(PromptFileError, match=r"not UTF-8 text \(line 2"):
        load_prompts(tmp_path / "latin1.txt")
    with pytest.raises(PromptFileError, match="is a folder"):
        load_prompts(tmp_path)
