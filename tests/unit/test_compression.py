"""Compression (`aigc_core.compression`): each method's model is an ordinary saved folder that its
family loads without unpickling anything, smaller than its parent and close to it; the tolerance
gate in both directions with the policy's floors; a family without a method is refused."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from aigc_core import families
from aigc_core.compression import (
    Compressed,
    CompressInputs,
    Compression,
    compress,
    int8,
    model_bytes,
    within_tolerance,
)
from aigc_core.compression.pruning import Pruning, dcgan_channels, prune
from aigc_core.families.text import GATE as TEXT_GATE
from aigc_core.models.chars import build_vocab
from aigc_core.models.dcgan import DCGANConfig, Generator
from aigc_core.models.io import CONFIG, WEIGHTS, config_fields, read_weights, save_model
from aigc_core.promotion import GatePolicy

VOCAB = build_vocab("abcdefghij .\n")
TEXT = "abc def ghij. " * 6


@pytest.fixture
def no_pickle(monkeypatch):
    """Any unpickling, or torch.load, fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was unpickled")

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


TINY = {  # mostly weight matrices, as real models are (the smoke presets are half embeddings)
    "charlstm": {"embed_dim": 16, "hidden": 32},
    "transformer": {"n_embd": 32, "n_layer": 2, "n_head": 2},
}


def text_parent(tmp_path, name: str):
    family = families.get(name)
    cfg = dataclasses.replace(family.presets["smoke"].model, vocab=VOCAB, **TINY[name])
    torch.manual_seed(0)
    build = family.load_generator.args[0]  # the family's network class
    save_model(tmp_path / "parent", build(cfg), cfg.to_dict())
    return family


def load(family, folder):
    return family.load_generator(folder / WEIGHTS, folder / CONFIG)


def inputs(tmp_path, **kw) -> CompressInputs:
    return CompressInputs(tmp_path / "parent", tmp_path / "out", table=None, manifest={}, **kw)


@pytest.mark.parametrize("name", ["charlstm", "transformer"])
def test_int8_model_loads_through_its_family_without_pickle_and_stays_close(
    tmp_path, name, no_pickle
):
    family = text_parent(tmp_path, name)
    out = compress(family, inputs(tmp_path))
    assert isinstance(out, Compressed) and out.method == "dynamic-int8" == family.compression.method
    assert out.bytes < out.parent_bytes / 2  # int8 weights: about a quarter of the float ones
    assert (out.parent_bytes, out.bytes) == (
        model_bytes(tmp_path / "parent"),
        model_bytes(out.out_dir),
    )

    config = json.loads((out.out_dir / CONFIG).read_text())
    assert config["family"] == name and config["compression"]["method"] == "dynamic-int8"
    assert "compression" not in config_fields(config)  # not a field of the model's config
    stored = load_file(out.out_dir / WEIGHTS)
    quantized = [k for k, v in stored.items() if v.dtype == torch.int8]
    assert quantized and all(stored[k + int8.SCALE].dtype == torch.float32 for k in quantized)

    parent, child = load(family, tmp_path / "parent"), load(family, out.out_dir)
    kinds = {type(m).__module__ for m in child.module.modules()}
    assert any(k.startswith("torch.ao.nn.quantized.dynamic") for k in kinds), kinds  # int8 kernels
    ids = child.context_ids(TEXT)[None, : child.module.cfg.block_size]  # (1, T)
    with torch.inference_mode():
        want, got = parent.module(ids)[0], child.module(ids)[0]
    assert torch.allclose(got, want, atol=0.05), (got - want).abs().max()
    (p,), (c,) = parent.score([""], [TEXT]), child.score([""], [TEXT])
    assert abs(c - p) < 0.01 * p
    texts = child.generate(["ab"], 12, seed=0)
    assert len(texts[0][0]) == 12 and set(texts[0][0]) <= set(VOCAB)


def test_int8_layers_hold_exactly_the_stored_integers(tmp_path):
    family = text_parent(tmp_path, "charlstm")
    out = compress(family, inputs(tmp_path))
    stored = load_file(out.out_dir / WEIGHTS)
    head = load(family, out.out_dir).module.head  # a dynamic quantized Linear
    w = head.weight()  # qint8 per-channel
    assert torch.equal(w.int_repr(), stored["head.weight"])
    assert torch.allclose(w.q_per_channel_scales().float(), stored["head.weight_scale"])


def test_quantize_weight_is_symmetric_per_channel_and_round_trips():
    w = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -0.01]])
    q, scale = int8.quantize_weight(w)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert torch.equal(q[0], torch.tensor([64, -127, 32], dtype=torch.int8))
    assert torch.equal(q[1], torch.zeros(3, dtype=torch.int8))  # an all-zero row
    assert torch.allclose(int8.dequantize(q, scale), w, atol=float(scale.max()) / 2)
    assert torch.equal(int8.quantize_weight(int8.dequantize(q, scale))[0], q)  # stable


def test_a_quantized_file_reads_back_as_float_weights_for_a_warm_start(tmp_path):
    family = text_parent(tmp_path, "transformer")
    out = compress(family, inputs(tmp_path))
    state = read_weights(out.out_dir / WEIGHTS)
    parent = read_weights(tmp_path / "parent" / WEIGHTS)
    assert state.keys() == parent.keys()  # no scales, the float model's own keys
    assert all(v.is_floating_point() for v in state.values())
    w = "blocks.0.mlp.fc.weight"
    assert torch.allclose(state[w], parent[w], atol=float(parent[w].abs().max()) / 127)


def dcgan_parent(tmp_path, dead: bool = False) -> Generator:
    """A seeded tiny DCGAN generator with non-trivial BatchNorm statistics, saved as the parent;
    `dead`: half the channels of every group contribute nothing (their readers' weights zero)."""
    torch.manual_seed(0)
    g = Generator(DCGANConfig(z_dim=8, g_width=8, d_width=4, image_size=8)).train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(32, 8))
        if dead:  # odd channels of each group: nothing downstream reads them
            for consumer in (4, 7, 10):
                g.net[consumer].weight[1::2] = 0
            g.net[13].weight[:, 1::2] = 0
    save_model(tmp_path / "parent", g.eval(), g.cfg.to_dict())
    return g


def dcgan_family(**settings):
    family = families.get("dcgan")
    method = dcgan_channels(family.load_generator, 0.1, **settings)
    return dataclasses.replace(family, compression=method)


def test_pruning_removes_the_channels_nothing_reads_without_changing_the_function(tmp_path):
    parent = dcgan_parent(tmp_path, dead=True)
    student = prune(parent, 0.5, torch.Generator().manual_seed(0))
    assert student.cfg.g_width == 4 and student.cfg.z_dim == parent.cfg.z_dim
    z = torch.randn(16, 8)
    with torch.no_grad():
        assert torch.allclose(student.eval()(z), parent.eval()(z), atol=1e-5)


def test_pruned_dcgan_is_a_smaller_ordinary_model_closer_after_distillation(tmp_path, no_pickle):
    parent = dcgan_parent(tmp_path)
    family = dcgan_family(steps=0)
    untuned = compress(family, inputs(tmp_path)).out_dir
    before = json.loads((untuned / CONFIG).read_text())["compression"]["distill_mse"]
    tuned = compress(dcgan_family(steps=40, batch_size=16), inputs(tmp_path, seed=1))
    assert tuned.out_dir == untuned  # the same folder, replaced whole
    assert tuned.method == "prune-50-distill"
    assert tuned.bytes < tuned.parent_bytes / 2  # the transposed convolutions: a quarter
    config = json.loads((tuned.out_dir / CONFIG).read_text())
    assert config["g_width"] == 4 and config["compression"]["parent_g_width"] == 8
    assert config["compression"]["distill_steps"] == 40
    after = config["compression"]["distill_mse"]
    assert after < 0.7 * before, (before, after)  # distillation brought it closer

    child = load(family, tuned.out_dir)  # the family's own loader: a plain Generator
    assert type(child.module) is Generator and child.module.cfg.g_width == 4
    z = torch.randn(256, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        err = torch.mean((child.module(z) - parent.eval()(z)) ** 2).item()
    assert err < 2 * after  # on latents it never saw: as close as in training
    images = child.generate(4, seed=0)
    assert images.shape == (4, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_pruning_settings_are_checked():
    assert Pruning(keep=0.25).method == "prune-75-distill"
    for bad in ({"keep": 1.0}, {"keep": 0}, {"steps": -1}, {"lr": 0}):
        with pytest.raises(ValueError):
            Pruning(**bad)


def test_a_family_without_compression_is_refused_by_name(tmp_path):
    family = dataclasses.replace(families.get("dcgan"), compression=None)
    with pytest.raises(ValueError, match="dcgan family has no compression method"):
        compress(family, inputs(tmp_path))


def test_a_compressed_model_is_not_compressed_again(tmp_path):
    family = text_parent(tmp_path, "charlstm")
    out = compress(family, inputs(tmp_path))
    again = CompressInputs(out.out_dir, tmp_path / "again", None, {})
    with pytest.raises(ValueError, match="already compressed"):
        compress(family, again)
    assert not (tmp_path / "again").exists()


def test_a_failed_compression_leaves_nothing_and_keeps_an_earlier_result(tmp_path):
    text_parent(tmp_path, "charlstm")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "earlier").write_text("kept")

    def half_written(inp: CompressInputs) -> None:
        (inp.out_dir / WEIGHTS).write_bytes(b"partial")
        raise RuntimeError("killed")

    family = dataclasses.replace(
        families.get("charlstm"), compression=Compression("broken", 0.1, half_written)
    )
    with pytest.raises(RuntimeError, match="killed"):
        compress(family, inputs(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "parent"]  # no staging left
    assert (tmp_path / "out" / "earlier").read_text() == "kept"


def test_a_tolerance_must_be_a_finite_relative_worsening():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tolerance"):
            Compression("m", bad, lambda inputs: None)


FID = GatePolicy(metric="fid", lower_is_better=True, maximums={"memorization_rate": 0.05})
ACCURACY = GatePolicy(metric="accuracy", lower_is_better=False, minimums={"coverage": 0.5})


def test_within_tolerance_lower_is_better():
    ok, why = within_tolerance({"fid": 20.0}, {"fid": 21.9, "memorization_rate": 0}, FID, 0.1)
    assert ok and "21.9" in why and "20" in why and "22" in why
    ok, why = within_tolerance({"fid": 20.0}, {"fid": 22.1, "memorization_rate": 0}, FID, 0.1)
    assert not ok and "22.1" in why and "22" in why
    assert within_tolerance({"fid": 20.0}, {"fid": 5.0, "memorization_rate": 0}, FID, 0.0)[0]


def test_within_tolerance_higher_is_better():
    ok, why = within_tolerance({"accuracy": 0.9}, {"accuracy": 0.82, "coverage": 1}, ACCURACY, 0.1)
    assert ok and "0.81" in why  # at least 0.9 - 10%
    ok, _ = within_tolerance({"accuracy": 0.9}, {"accuracy": 0.8, "coverage": 1}, ACCURACY, 0.1)
    assert not ok


def test_within_tolerance_applies_the_policy_floors_to_the_child():
    ok, why = within_tolerance({"fid": 20.0}, {"fid": 19.0, "memorization_rate": 0.2}, FID, 0.1)
    assert not ok and "memorization_rate" in why and "ceiling" in why
    ok, why = within_tolerance({"accuracy": 0.9}, {"accuracy": 0.95}, ACCURACY, 0.1)
    assert not ok and "coverage" in why  # a floor's metric missing fails it
    parent = {"bits_per_char": 2.0}
    child = {"bits_per_char": 2.01, "distinct_2": 0.5, "novelty": 0.05}
    ok, why = within_tolerance(parent, child, TEXT_GATE, 0.02)
    assert not ok and "novelty" in why


def test_within_tolerance_needs_both_numbers():
    ok, why = within_tolerance({}, {"fid": 1.0, "memorization_rate": 0}, FID, 0.1)
    assert not ok and "parent has no finite fid" in why
    ok, why = within_tolerance({"fid": 1.0}, {"fid": float("nan")}, FID, 0.1)
    assert not ok and "compressed model has no finite fid" in why


def test_family_catalog_names_the_compression_method():
    assert families.get("charlstm").to_dict()["compression"] == "dynamic-int8"
    assert families.get("transformer").to_dict()["compression"] == "dynamic-int8"
    no = dataclasses.replace(families.get("dcgan"), compression=None)
    assert no.to_dict()["compression"] is None
