"""The sentence VAE (textvae family): its ELBO and KL math, active units, KL annealing, word
dropout, sentences, seeded generation, interpolation, the gate and the batch plan's checks."""

from __future__ import annotations

import math

import pytest
import torch

from aigc_core import families
from aigc_core.content.plan import check_interpolation_model, check_interpolation_request
from aigc_core.families.base import TrainData
from aigc_core.families.textvae import GATE
from aigc_core.generation.text_options import LatentPoint, interpolation_points
from aigc_core.generation.textvae import lerp, slerp
from aigc_core.models.io import save_model
from aigc_core.models.textvae import (
    TextVAE,
    TextVAEConfig,
    active_units,
    elbo_terms,
    kl_per_unit,
    kl_weight,
    kl_with_free_bits,
    targets,
)
from aigc_core.promotion import decide
from aigc_core.training.textvae import (
    TextVAEJob,
    TextVAETrainConfig,
    encode_batch,
    heldout_scores,
    sentences,
    word_dropout,
)

VOCAB = " .abcdefghijklmnopqrstuvwxyz"
SENTENCES = ["the cat sat.", "a dog ran far.", "we go home now.", "it is a test."]


def tiny(z_dim: int = 4, seed: int = 0) -> TextVAE:
    torch.manual_seed(seed)
    return TextVAE(TextVAEConfig(vocab=VOCAB, embed_dim=8, hidden=16, z_dim=z_dim, max_len=20))


def test_targets_end_each_sentence_with_eos_and_ignore_the_padding():
    ids, lengths = encode_batch(["ab", "abcd"], VOCAB)
    eos = len(VOCAB)
    t = targets(ids, lengths, eos)
    assert t.shape == (2, 5)
    assert t[0].tolist() == [ids[0, 0].item(), ids[0, 1].item(), eos, -100, -100]
    assert t[1, 4].item() == eos and (t[1, :4] == ids[1]).all()


def test_kl_matches_the_closed_form_and_is_zero_at_the_prior():
    mu = torch.tensor([[0.0, 1.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (1 + 4 - 1 - ln 4)
    assert kl_per_unit(mu, logvar).tolist()[0] == pytest.approx([0.0, 0.5 * (4 - math.log(4))])
    # free bits raise each unit's batch-mean KL to the floor
    assert float(kl_with_free_bits(mu, logvar, 0.0)) == pytest.approx(0.5 * (4 - math.log(4)))
    assert float(kl_with_free_bits(mu, logvar, 1.0)) == pytest.approx(1.0 + 0.5 * (4 - math.log(4)))


def test_elbo_terms_on_a_tiny_model_sum_the_per_symbol_nll():
    model = tiny()
    ids, lengths = encode_batch(SENTENCES[:2], VOCAB)
    with torch.no_grad():
        logits, mu, logvar = model(ids, lengths, torch.zeros(2, 4))
    tgt = targets(ids, lengths, model.cfg.eos)
    recon, kl, n = elbo_terms(logits, tgt, mu, logvar)
    assert n.tolist() == [len(SENTENCES[0]) + 1, len(SENTENCES[1]) + 1]  # characters + EOS
    logp = torch.log_softmax(logits[0], dim=-1)
    want = -sum(logp[t, tgt[0, t]].item() for t in range(int(n[0])))
    assert float(recon[0]) == pytest.approx(want, rel=1e-5)
    assert float(kl[0]) == pytest.approx(float(kl_per_unit(mu, logvar)[0].sum()), rel=1e-6)
    # an untrained model is near uniform: about ln(V+1) nats per symbol
    assert float(recon.sum() / n.sum()) == pytest.approx(math.log(len(VOCAB) + 1), rel=0.2)


def test_active_units_count_the_dimensions_whose_posterior_mean_varies():
    g = torch.Generator().manual_seed(0)
    means = torch.zeros(200, 5)
    means[:, 0] = torch.randn(200, generator=g)  # variance ~1: active
    means[:, 1] = 0.05 * torch.randn(200, generator=g)  # variance ~0.0025: inactive
    means[:, 2] = 3.0  # constant: inactive
    means[:, 3] = 0.2 * torch.randn(200, generator=g)  # variance ~0.04: active
    assert active_units(means) == 2
    with pytest.raises(ValueError, match=">= 2 inputs"):
        active_units(means[:1])


def test_kl_annealing_schedules():
    assert [kl_weight(s, "linear", 100) for s in (0, 50, 100, 500)] == [0.0, 0.5, 1.0, 1.0]
    sig = [kl_weight(s, "sigmoid", 100) for s in (0, 50, 100)]
    assert sig[0] < 0.01 and sig[1] == pytest.approx(0.5) and sig[2] > 0.99
    assert kl_weight(0, "none", 100) == 1.0 and kl_weight(0, "linear", 0) == 1.0
    with pytest.raises(ValueError, match="unknown KL annealing"):
        kl_weight(0, "cosine", 10)


def test_word_dropout_replaces_whole_words_and_keeps_bos_and_spaces():
    cfg = TextVAEConfig(vocab=VOCAB, max_len=40)
    ids, _ = encode_batch(["aaa bbb ccc ddd eee fff ggg hhh"] * 8, VOCAB)
    inputs = torch.cat([torch.full((8, 1), cfg.bos), ids], dim=1)
    space = VOCAB.index(" ")
    out = word_dropout(inputs, space, 0.5, cfg.unk, torch.Generator().manual_seed(0))
    assert (out[:, 0] == cfg.bos).all() and ((out == space) == (inputs == space)).all()
    dropped = out[:, 1:] == cfg.unk
    for row in dropped:  # a word is dropped whole or not at all
        words = row.view(-1)[:31].tolist()
        for w in range(8):
            chunk = words[4 * w : 4 * w + 3]
            assert all(chunk) or not any(chunk)
    assert 0.2 < dropped.float().sum() / (8 * 24) < 0.8
    assert torch.equal(word_dropout(inputs, space, 0.0, cfg.unk, torch.Generator()), inputs)
    all_gone = word_dropout(inputs, space, 1.0, cfg.unk, torch.Generator())
    assert ((all_gone[:, 1:] == cfg.unk) == (inputs[:, 1:] != space)).all()


def test_sentences_split_paragraphs_and_bound_the_length():
    text = (
        "First one here. Second\none here!\n\nMain heading\n************\n\nNo. " + "x" * 50 + "."
    )
    kept, long = sentences(text, max_len=30)
    assert kept == ["First one here.", "Second one here!", "Main heading"]
    assert long == 1  # the 51-character one; "No." is too short


def _trained(tmp_path, steps=150):
    """A tiny VAE trained on four sentences until it reconstructs them, saved and loaded."""
    cfg = TextVAEConfig(vocab=VOCAB, embed_dim=16, hidden=48, z_dim=4, max_len=20)
    tc = TextVAETrainConfig(
        batch_size=8, steps=steps, lr=1e-2, word_dropout=0.0, anneal_steps=steps, bf16=False
    )
    job = TextVAEJob(SENTENCES, SENTENCES, cfg, tc, torch.device("cpu"))
    first = job.evaluate()
    for s in range(1, steps + 1):
        job.train_step(s)
    save_model(tmp_path, job.model.eval(), cfg.to_dict())
    gen = families.get("textvae").load_generator(
        tmp_path / "weights.safetensors", tmp_path / "config.json"
    )
    return gen, first, job.evaluate()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    return _trained(tmp_path_factory.mktemp("textvae"))


def test_training_lowers_the_heldout_neg_elbo_and_learns_to_reconstruct(trained):
    gen, first, last = trained
    assert last["val_neg_elbo"] < 0.5 * first["val_neg_elbo"]
    assert last["val_recon_accuracy"] > 0.9 and last["val_active_units"] >= 1


def test_interpolation_endpoints_decode_to_the_inputs(trained):
    gen, _, _ = trained
    a, b = SENTENCES[0], SENTENCES[2]
    path = gen.interpolate(a, b, 5)
    assert len(path) == 5
    assert path[0] == (a, "eos") and path[-1] == (b, "eos")
    assert gen.interpolate(a, b, 5) == path  # greedy: deterministic
    # the batch path: LatentPoint prompts through `generate`, as a shard calls it
    points = interpolation_points(a, b, 3)
    assert [t for t, _ in gen.generate(points, 64, [1, 2, 3], temperature=0.0)][0] == a


def test_generation_is_seeded_per_item(trained):
    gen, _, _ = trained
    one = gen.generate(["", "", "the "], 30, [7, 8, 9])
    assert gen.generate(["", "", "the "], 30, [7, 8, 9]) == one
    assert gen.generate(["the "], 30, [9]) == [one[2]]  # independent of the other rows
    assert gen.generate(["", ""], 30, [7, 10])[0] == one[0]
    assert all(r in ("eos", "length", "stop") for _, r in one)
    cut = gen.generate([""], 30, [7], stop=["a"])[0]
    assert "a" not in cut[0]
    scores = gen.score(["", "the "], ["the cat sat.", "cat sat."])
    assert all(math.isfinite(s) and s >= 0 for s in scores)
    assert math.isnan(gen.score([""], [""])[0])


def test_prompts_outside_the_vocabulary_or_too_long_are_refused(trained):
    gen, _, _ = trained
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        gen.context_ids("The Cat")
    with pytest.raises(ValueError, match="longer than the sentences"):
        gen.context_ids("a" * 21)
    with pytest.raises(ValueError, match="empty sentence"):
        gen.context_ids(LatentPoint("", "a cat.", 0.5))


def test_predict_answers_the_text_request(trained):
    import pandas as pd

    gen, _, _ = trained
    out = gen.predict(pd.DataFrame({"prompt": ["", "the "]}), {"seed": 3, "max_new_tokens": 20})
    assert list(out.columns) == ["request", "prompt", "seed", "text", "finish_reason"]
    assert len(out) == 2 and (out["seed"] == 3).all()


def test_slerp_and_lerp_meet_the_endpoints():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    for f in (lerp, slerp):
        assert torch.allclose(f(a, b, 0.0), a) and torch.allclose(f(a, b, 1.0), b)
    assert torch.allclose(slerp(a, a, 0.3), a)


def test_latent_points_read_as_their_path_and_survive_pickling():
    import pickle

    p = interpolation_points("a cat.", "a dog.", 3)
    assert [x.t for x in p] == [0.0, 0.5, 1.0] and p[1] == "a cat. -> a dog. @ 0.500"
    q = pickle.loads(pickle.dumps(p[1]))
    assert isinstance(q, LatentPoint) and (q.a, q.b, q.t) == ("a cat.", "a dog.", 0.5)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        interpolation_points("a", "b", 1)


def test_the_gate_refuses_a_collapsed_posterior():
    good = {"neg_elbo_per_char": 1.9, "kl": 5.0, "active_units": 6.0}
    good |= {"distinct_2": 0.9, "novelty": 0.8}
    assert decide(good, None, GATE).promote
    collapsed = good | {"kl": 0.001, "active_units": 0.0, "neg_elbo_per_char": 1.5}
    decision = decide(collapsed, {"neg_elbo_per_char": 1.9}, GATE)
    assert not decision.promote
    assert "active_units 0 below floor 1" in decision.reason and "kl" in decision.reason


def test_a_collapsed_model_scores_zero_active_units(trained):
    """A model whose encoder ignores its input (weights zeroed) has no active unit."""
    gen, _, _ = trained
    model = tiny()
    with torch.no_grad():
        for p in model.to_stats.parameters():
            p.zero_()
    ids, lengths = encode_batch(SENTENCES, VOCAB)
    scores = heldout_scores(model.eval(), ids, lengths)
    assert scores["active_units"] == 0.0 and scores["kl"] == pytest.approx(0.0, abs=1e-6)


def test_interpolation_requests_are_checked():
    with pytest.raises(ValueError, match="drop --prompt-file"):
        check_interpolation_request(["a.", "b."], 5, "p.txt", "text", "model m version 1")
    with pytest.raises(ValueError, match="applies to text VAEs"):
        check_interpolation_request(["a.", "b."], 5, None, "image", "model m version 1")
    with pytest.raises(ValueError, match="steps must be >= 2"):
        check_interpolation_request(["a.", "b."], 1, None, "text", "model m version 1")
    charlstm = families.get("charlstm")

    class LanguageModel:  # a generator without a latent space
        def generate(self, *a, **k): ...

    with pytest.raises(ValueError, match="no latent space to interpolate in"):
        check_interpolation_model(LanguageModel(), charlstm, "model m version 1")


def test_the_family_builds_its_job_from_a_snapshot_text():
    family = families.get("textvae")
    assert family.kind == "text" and family.policy.metric == "neg_elbo_per_char"
    text = "\n\n".join(f"sentence number {c} is here. and another {c} one." for c in "abcdefghij")
    model_cfg, train_cfg = family.preset("smoke")
    model_cfg = family.prepare(model_cfg, TrainData(text=text))
    job = family.build_job(model_cfg, train_cfg, TrainData(text=text), torch.device("cpu"))
    assert len(job.train_ids) == 18 and len(job.val_ids) == 2  # the last tenth held out
    assert family.served_module(job) is job.model
