"""Sample-set scores (FID against a reference implementation, precision/recall, class
diversity, memorization) and text metrics, on small seeded arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from aigc_core.evaluation.fid import FeatureExtractor, fid, fid_images
from aigc_core.evaluation.samples import (
    class_diversity,
    memorization_rate,
    memorization_threshold,
    precision_recall,
)
from aigc_core.evaluation.text import (
    bits_per_char,
    distinct_n,
    generation_metrics,
    language_model_metrics,
    nll_nats,
    novelty,
    perplexity,
)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root (pytorch-fid's way)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def test_fid_matches_the_scipy_reference_on_correlated_features():
    rng = np.random.default_rng(3)
    mix_a, mix_b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    a = rng.normal(size=(800, 6)) @ mix_a
    b = rng.normal(size=(700, 6)) @ mix_b + 0.5
    assert fid(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-6)


def test_fid_images_embeds_the_reference_once_and_matches_feature_fid():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.Tanh())
    ref, x1, x2 = torch.rand(300, 1, 4, 4), torch.rand(250, 1, 4, 4), torch.rand(200, 1, 4, 4) * 0.5
    out = fid_images(FeatureExtractor(net, 5), ref, {"same": x1, "darker": x2}, batch_size=64)
    with torch.no_grad():
        f_ref, f1, f2 = (net(x).double().numpy() for x in (ref, x1, x2))
    assert out["same"] == pytest.approx(fid(f_ref, f1), rel=1e-6)
    assert out["darker"] == pytest.approx(fid(f_ref, f2), rel=1e-6)
    assert out["same"] < out["darker"]


def test_fid_refuses_mismatched_or_non_finite_features():
    with pytest.raises(ValueError, match="dimensions differ"):
        fid(np.zeros((5, 3)), np.zeros((5, 4)))
    bad = np.ones((5, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fid(bad, np.ones((5, 3)))


def _two_clusters(n: int, rng) -> np.ndarray:
    a = rng.normal(size=(n // 2, 8))
    b = rng.normal(size=(n - n // 2, 8)) + 20.0
    return np.concatenate([a, b])


def test_precision_recall_of_the_same_distribution_are_high():
    rng = np.random.default_rng(0)
    p, r = precision_recall(_two_clusters(600, rng), _two_clusters(600, rng))
    assert p > 0.85 and r > 0.85


def test_mode_collapse_keeps_precision_and_halves_recall():
    rng = np.random.default_rng(1)
    real = _two_clusters(600, rng)
    collapsed = rng.normal(size=(600, 8))  # only the first cluster
    p, r = precision_recall(real, collapsed)
    assert p > 0.85
    assert 0.4 < r < 0.55


def test_samples_off_the_data_have_no_precision_or_recall():
    rng = np.random.default_rng(2)
    p, r = precision_recall(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 50.0)
    assert p == 0.0 and r == 0.0


def test_class_diversity_spans_one_to_k():
    k = 10
    even = np.eye(k)[np.arange(500) % k]  # confident, all classes equally
    assert class_diversity(even) == pytest.approx(k, rel=1e-6)
    one_class = np.eye(k)[np.zeros(500, dtype=int)]
    assert class_diversity(one_class) == pytest.approx(1.0, abs=1e-6)
    unsure = np.full((500, k), 1.0 / k)
    assert class_diversity(unsure) == pytest.approx(1.0, abs=1e-6)
    half = np.eye(k)[np.arange(500) % 5]  # five classes used evenly
    assert class_diversity(half) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="sum to 1"):
        class_diversity(np.ones((3, k)))


def _images(n: int, rng) -> np.ndarray:
    return rng.uniform(size=(n, 1, 8, 8)).astype(np.float32)


def test_copies_of_training_images_are_memorized_and_new_images_are_not():
    rng = np.random.default_rng(4)
    train, heldout = _images(400, rng), _images(200, rng)
    threshold = memorization_threshold(train, heldout)
    assert threshold > 0
    copies = train[:100] + rng.normal(scale=1e-3, size=(100, 1, 8, 8)).astype(np.float32)
    assert memorization_rate(copies, train, heldout) == 1.0
    fresh = _images(500, rng)  # drawn like held-out data: ~1% fall under the 1st percentile
    assert memorization_rate(fresh, train, heldout) < 0.05
    mixed = np.concatenate([copies[:50], fresh[:450]])
    assert 0.09 <= memorization_rate(mixed, train, heldout) <= 0.15


def test_memorization_refuses_mismatched_shapes():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="differ in size"):
        memorization_rate(
            rng.uniform(size=(4, 10)), rng.uniform(size=(4, 12)), rng.uniform(size=(4, 12))
        )


def test_held_out_loss_in_nats_bits_and_perplexity():
    vocab = 16
    logits = torch.zeros(2, 5, vocab)  # uniform: the loss is ln V per token
    targets = torch.randint(vocab, (2, 5), generator=torch.Generator().manual_seed(0))
    nats = nll_nats(logits, targets)
    assert nats == pytest.approx(math.log(vocab), rel=1e-6)
    assert bits_per_char(nats) == pytest.approx(4.0, rel=1e-6)
    assert perplexity(nats) == pytest.approx(vocab, rel=1e-5)
    m = language_model_metrics(math.log(2.0))
    assert m["bits_per_char"] == pytest.approx(1.0) and m["perplexity"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="disagree"):
        nll_nats(torch.zeros(2, 5, vocab), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="finite"):
        language_model_metrics(float("nan"))


def test_distinct_n_is_corpus_level_over_words():
    assert distinct_n(["a a a a"], 1) == pytest.approx(1 / 4)
    assert distinct_n(["a a a a"], 2) == pytest.approx(1 / 3)
    assert distinct_n(["the cat sat", "The cat ran"], 1) == pytest.approx(4 / 6)  # lower-cased
    assert distinct_n(["the cat", "sat down"], 2) == pytest.approx(1.0)  # no cross-text bigram
    assert distinct_n(["abab"], 2, unit="char") == pytest.approx(2 / 3)
    assert distinct_n(["one"], 2) == 0.0


def test_novelty_counts_generated_ngrams_missing_from_training():
    training = "the quick brown fox jumps over the lazy dog"
    assert novelty(["the quick brown fox jumps"], training, n=4) == 0.0
    assert novelty(["purple monkeys dance wildly tonight"], training, n=4) == 1.0
    # two four-grams: "the quick brown fox" seen, "quick brown fox sleeps" new
    assert novelty(["the quick brown fox sleeps"], training, n=4) == pytest.approx(1 / 2)
    m = generation_metrics(["the quick brown fox sleeps now"], training)
    assert set(m) == {"distinct_1", "distinct_2", "novelty", "novelty_n"}
    with pytest.raises(ValueError, match="at least one"):
        generation_metrics([], training)


def test_vae_reconstructions_sit_beside_their_originals():
    from aigc_core.evaluation.reconstruction import reconstruct, side_by_side
    from aigc_core.models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    vae = VAE(VAEConfig(z_dim=4, width=4))
    x = np.random.default_rng(0).uniform(size=(10, 1, 28, 28)).astype(np.float32)
    r = reconstruct(vae, x)
    assert r.shape == x.shape and r.min() >= 0 and r.max() <= 1
    assert np.array_equal(r, reconstruct(vae, x))  # the posterior mean: no sampling
    pairs = side_by_side(x, r, per_row=4)  # 8 of the 10 images fill two rows of 4
    assert pairs.shape == (16, 1, 28, 28)
    assert np.array_equal(pairs[:4], x[:4]) and np.array_equal(pairs[4:8], r[:4])
    assert np.array_equal(pairs[8:12], x[4:8]) and np.array_equal(pairs[12:16], r[4:8])
