"""Incremental text decoding (`CachedLogits` over a model's `decoder()`: the Transformer's
key/value cache, the LSTM's carried state) against the model run on the whole cropped context at
every step (`cropped_logits`, `generate(..., cache=False)`)."""

from __future__ import annotations

import pytest
import torch

from aigc_core.generation.text import CachedLogits, TextGenerator, cropped_logits
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab
from aigc_core.models.transformer import KVCache, TransformerConfig, TransformerLM

VOCAB = build_vocab("abcdefghijklmnop .")
BLOCK = 12
CPU = torch.device("cpu")


def tiny(family: str) -> torch.nn.Module:
    """A seeded random model with large random weights (no biases), so that its greedy text
    depends on the context: with the default initialization it repeats one character (as the
    rotary model does at seed 0 or with smaller weights: without a position embedding, less
    varies along the context)."""
    rotary = family.endswith("rotary")
    torch.manual_seed(2 if rotary else 0)
    if family == "charlstm":
        model = CharLSTM(CharLSTMConfig(vocab=VOCAB, embed_dim=8, hidden=16, block_size=BLOCK))
    else:  # "transformer" or "transformer-rotary"
        positions = "rotary" if rotary else "learned"
        cfg = TransformerConfig(
            vocab=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16, positions=positions
        )
        model = TransformerLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, 1.5 if rotary else 0.6)
            elif "bias" in name:
                p.zero_()
    return model.eval()


@pytest.fixture(params=["charlstm", "transformer", "transformer-rotary"])
def gen(request) -> TextGenerator:
    return TextGenerator(tiny(request.param))


def ids_of(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


@pytest.mark.parametrize("prompt_len", [1, 5, BLOCK, BLOCK + 7])
def test_cached_logits_are_the_cropped_contexts(gen, prompt_len):
    """Step by step, prompt shorter than, as long as and longer than block_size, and on past
    it (where the decoder prefills the last block_size ids again)."""
    seq = torch.randint(0, len(VOCAB), (3, prompt_len + 2 * BLOCK), generator=torch.Generator())
    cached = CachedLogits(gen.model.decoder(), BLOCK, CPU)
    whole = cropped_logits(gen.model, BLOCK, CPU)
    with torch.inference_mode():
        for t in range(prompt_len, seq.shape[1] + 1):
            torch.testing.assert_close(cached(seq[:, :t]), whole(seq[:, :t]), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "prompts",
    [
        ["ab", "p.", "ko"],  # the continuation crosses block_size
        ["abcdefghijklmnop ab"],  # longer than block_size
        ["abcdefghijkl"],  # exactly block_size
    ],
)
@pytest.mark.parametrize("greedy", [dict(temperature=0), dict(top_k=1)])
def test_greedy_text_is_the_same_with_and_without_the_cache(gen, prompts, greedy):
    cached = gen.generate(prompts, 3 * BLOCK, 0, **greedy)
    assert cached == gen.generate(prompts, 3 * BLOCK, 0, cache=False, **greedy)
    assert all(len(set(text)) >= 4 for text, _ in cached)  # the text depends on the context


def test_seeded_samples_are_the_same_with_and_without_the_cache(gen):
    prompts, kw = ["ab", "cd", "ef", "ab"], dict(temperature=0.9, top_p=0.95)
    cached = gen.generate(prompts, 3 * BLOCK, 11, **kw)
    assert cached == gen.generate(prompts, 3 * BLOCK, 11, cache=False, **kw)
    assert cached[0] != cached[3]  # the same prompt with another seed


def first_stop(text: str, stops: list[str]) -> tuple[str, str]:
    """What the sampler makes of `text` drawn without stops: cut where a stop string first
    completes (the earliest start among those completing there)."""
    for end in range(1, len(text) + 1):
        starts = [end - len(s) for s in stops if text[:end].endswith(s)]
        if starts:
            return text[: min(starts)], "stop"
    return text, "length"


def test_rows_stop_on_their_own_and_match_each_row_alone(gen):
    """Rows of one batch (prompts of equal length) that finish at different steps, before and
    after block_size: each gets the text it gets alone and without the cache, its text drawn
    without stops cut at the first stop."""
    prompts, seeds, kw = ["ab", "p.", "ko", "ab", "gh"], [1, 2, 3, 4, 5], dict(temperature=0.8)
    free = [text for text, _ in gen.generate(prompts, 3 * BLOCK, seeds, **kw)]
    stops = [free[0][BLOCK + 2 : BLOCK + 5], free[1][3:5]]
    batch = gen.generate(prompts, 3 * BLOCK, seeds, stop=stops, **kw)
    assert batch == [first_stop(text, stops) for text in free]
    alone = [
        gen.generate([p], 3 * BLOCK, [s], stop=stops, **kw)[0]
        for p, s in zip(prompts, seeds, strict=True)
    ]
    assert batch == alone
    assert batch == gen.generate(prompts, 3 * BLOCK, seeds, stop=stops, cache=False, **kw)
    ends = sorted(len(text) for text, reason in batch if reason == "stop")
    assert ends[0] < BLOCK - 2 < ends[-1]  # one row stops inside the first window, one past it
    assert "length" in {reason for _, reason in batch}


def test_a_model_without_a_decoder_is_run_whole():
    """A plugin's module need not offer `decoder()`: generation then runs it on the cropped
    context at every step."""

    class Plain(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.inner, self.cfg = model, model.cfg

        def forward(self, idx):
            return self.inner(idx)

    model = tiny("transformer")
    plain = TextGenerator(Plain(model))
    assert not hasattr(plain.model, "decoder")
    want = TextGenerator(model).generate(["ab", "cd"], 2 * BLOCK, 3)
    assert plain.generate(["ab", "cd"], 2 * BLOCK, 3) == want


def test_transformer_cache_continues_by_several_positions_and_refuses_past_its_block():
    model = tiny("transformer")
    seq = torch.randint(0, len(VOCAB), (2, BLOCK), generator=torch.Generator().manual_seed(3))
    cache = KVCache(model.cfg, 2, CPU, torch.float32)
    with torch.no_grad():
        head, _ = model(seq[:, :5], cache=cache)
        tail, _ = model(seq[:, 5:9], cache=cache)  # 4 positions at once: a causal mask
        whole, _ = model(seq[:, :9])
        torch.testing.assert_close(torch.cat([head, tail], 1), whole, atol=1e-5, rtol=0)
        assert cache.length == 9
        with pytest.raises(ValueError, match=f"sequence length {BLOCK + 1} exceeds block_size"):
            model(seq[:, :4], cache=cache)
        with pytest.raises(ValueError, match="a cache of 2 rows cannot take 1"):
            model(seq[:1, :1], cache=KVCache(model.cfg, 2, CPU, torch.float32))


def test_a_decoder_needs_its_context_first(gen):
    with pytest.raises(RuntimeError, match="step before prefill"):
        gen.model.decoder().step(ids_of(1))
