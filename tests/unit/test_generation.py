"""Batched image sampling, shard plans and text samplers: tiny seeded models on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aigc_core.generation.images import generate_images
from aigc_core.generation.shards import part_name, plan_shards, shard_seed
from aigc_core.generation.text import (
    apply_temperature,
    cut_at_stop,
    find_stop,
    next_token,
    sample_tokens,
    top_k_filter,
    top_p_filter,
)
from aigc_core.generation.text_options import SamplingParams
from aigc_core.models.dcgan import DCGANConfig, Generator


@pytest.fixture(scope="module")
def tiny_generator():
    torch.manual_seed(0)
    return Generator(DCGANConfig(z_dim=8, g_width=8, image_size=8))


# --- images ---------------------------------------------------------------------------------


def test_parallel_batches_equal_sequential_and_restore_the_thread_count(tiny_generator):
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    one = generate_images(tiny_generator, 40, seed=2, batch_size=4, workers=1, bf16=False)
    many = generate_images(tiny_generator, 40, seed=2, batch_size=4, workers=3, bf16=False)
    np.testing.assert_array_equal(one, many)  # the same images, in order
    assert torch.get_num_threads() == threads
    with ThreadPoolExecutor(4) as ex:  # concurrent callers, as a served model may have
        runs = list(
            ex.map(
                lambda _: generate_images(
                    tiny_generator, 40, seed=2, batch_size=4, workers=2, bf16=False
                ),
                range(4),
            )
        )
    for r in runs:
        np.testing.assert_array_equal(r, one)
    assert torch.get_num_threads() == threads


def test_images_are_seeded_and_independent_of_batch_size(tiny_generator):
    a = generate_images(tiny_generator, 10, seed=3, batch_size=10, bf16=False)
    b = generate_images(tiny_generator, 10, seed=3, batch_size=3, bf16=False)
    c = generate_images(tiny_generator, 10, seed=4, batch_size=10, bf16=False)
    assert a.shape == (10, 1, 8, 8) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, c)


def test_bf16_batches_stay_close_to_fp32(tiny_generator):
    a = generate_images(tiny_generator, 6, seed=1, bf16=False)
    b = generate_images(tiny_generator, 6, seed=1, bf16=True)  # fp32 where bf16 is missing
    assert np.abs(a - b).max() < 0.05


def test_progress_callback_and_bad_sizes(tiny_generator):
    seen = []
    generate_images(tiny_generator, 5, 0, batch_size=2, on_batch=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    with pytest.raises(ValueError, match="n must be >= 1"):
        generate_images(tiny_generator, 0, 0)
    with pytest.raises(ValueError, match="batch_size"):
        generate_images(tiny_generator, 2, 0, batch_size=0)


# --- shards ---------------------------------------------------------------------------------


def test_shards_cover_every_item_once_with_distinct_seeds():
    plan = plan_shards(10, 3, seed=7)
    assert [(s.start, s.count) for s in plan] == [(0, 4), (4, 3), (7, 3)]
    assert sorted(i for s in plan for i in range(s.start, s.stop)) == list(range(10))
    assert len({s.seed for s in plan}) == 3
    assert plan == plan_shards(10, 3, seed=7)  # deterministic
    assert plan[0].seed != plan_shards(10, 3, seed=8)[0].seed
    # a shard's seed depends on the batch seed and its index only, not on the shard count
    assert plan_shards(20, 5, seed=7)[1].seed == plan[1].seed == shard_seed(7, 1)
    assert 0 <= plan[2].seed < 2**63
    assert part_name(3) == "part-00003.parquet"


def test_bad_shard_plans_are_refused():
    with pytest.raises(ValueError, match="shards must lie in"):
        plan_shards(3, 4, 0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        plan_shards(0, 1, 0)
    with pytest.raises(ValueError, match="seed"):
        shard_seed(-1, 0)


# --- text samplers --------------------------------------------------------------------------


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    out = top_k_filter(logits, 2)
    assert torch.isinf(out).tolist() == [[True, False, False, True]]
    assert torch.equal(top_k_filter(logits, 10), logits)


def test_top_p_keeps_the_nucleus_and_always_the_best_token():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).tolist() == [[True, False, False, False]]
    shuffled = logits[:, [2, 0, 3, 1]]  # order must not matter
    assert torch.isfinite(top_p_filter(shuffled, 0.8)).tolist() == [[False, True, False, True]]


def test_temperature_sharpens_and_zero_is_greedy():
    logits = torch.tensor([[0.0, 1.0]])
    assert torch.allclose(apply_temperature(logits, 0.5), torch.tensor([[0.0, 2.0]]))
    with pytest.raises(ValueError):
        apply_temperature(logits, 0)
    greedy = SamplingParams(temperature=0)
    assert next_token(torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 0.0]]), greedy).tolist() == [1, 0]
    # low temperature concentrates samples on the best token
    g = torch.Generator().manual_seed(0)
    many = torch.tensor([[0.0, 1.0]]).repeat(2000, 1)
    hot = next_token(many, SamplingParams(temperature=5.0), g).float().mean()
    cold = next_token(many, SamplingParams(temperature=0.2), g).float().mean()
    assert cold > 0.95 and 0.45 < hot < 0.65


def counting_model(vocab: int = 6):
    """next token = (last token + 1) mod vocab, with high certainty."""

    def next_logits(ids: torch.Tensor) -> torch.Tensor:
        nxt = (ids[:, -1] + 1) % vocab
        return torch.nn.functional.one_hot(nxt, vocab).float() * 20.0  # (B, V)

    return next_logits


def test_sampling_stops_on_length_eos_and_stop_sequences():
    prompts = torch.tensor([[0], [2]])
    out = sample_tokens(counting_model(), prompts, SamplingParams(max_new_tokens=4), seed=0)
    assert [o.ids for o in out] == [[1, 2, 3, 4], [3, 4, 5, 0]]
    assert {o.finish_reason for o in out} == {"length"}
    out = sample_tokens(
        counting_model(), prompts, SamplingParams(max_new_tokens=9, stop=((4, 5),)), 0
    )
    assert (out[0].ids, out[0].finish_reason) == ([1, 2, 3], "stop")  # stop sequence cut off
    assert (out[1].ids, out[1].finish_reason) == ([3], "stop")
    out = sample_tokens(counting_model(), prompts, SamplingParams(max_new_tokens=9, eos_id=3), 0)
    assert [(o.ids, o.finish_reason) for o in out] == [([1, 2], "eos"), ([], "eos")]


def test_sampling_is_seeded():
    def uniform(ids):
        return torch.zeros(ids.shape[0], 50)

    p = SamplingParams(max_new_tokens=8, top_k=20, top_p=0.9)
    a = sample_tokens(uniform, torch.zeros(2, 1, dtype=torch.long), p, seed=1)
    b = sample_tokens(uniform, torch.zeros(2, 1, dtype=torch.long), p, seed=1)
    c = sample_tokens(uniform, torch.zeros(2, 1, dtype=torch.long), p, seed=2)
    assert a == b and a != c


def test_stop_helpers_and_param_validation():
    assert find_stop([1, 2, 3, 4, 2, 3], [[2, 3], [4]]) == 1
    assert find_stop([1, 2], [[3]]) == -1
    assert cut_at_stop("hello\n\nworld END", ["END", "\n\n"]) == ("hello", True)
    assert cut_at_stop("hello", ["END"]) == ("hello", False)
    for bad in (
        dict(max_new_tokens=0),
        dict(temperature=-1),
        dict(top_k=0),
        dict(top_p=0.0),
        dict(stop=((),)),
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    with pytest.raises(ValueError, match="prompts must be"):
        sample_tokens(counting_model(), torch.zeros(3, dtype=torch.long), SamplingParams(), 0)
