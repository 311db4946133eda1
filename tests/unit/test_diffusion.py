"""The diffusion family: a tiny seeded UNet on CPU. Shapes and config checks, training through
the engine lowers the loss, a resumed run continues exactly (the weights' moving average
included), save/load without pickle gives the same samples, the same seed gives the same images
whatever the batch size, guidance and steps change them, labels are checked, and the
data-dependent `num_classes` cannot be set."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from aigc_core import families
from aigc_core.families import diffusion as family_module
from aigc_core.families.base import TrainData
from aigc_core.generation.diffusion import DiffusionGenerator, load_generator, sample
from aigc_core.generation.labels import LabelsError
from aigc_core.models.diffusion import DiffusionConfig, DiffusionModel
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.settings import SettingsError, resolve
from aigc_core.training import engine
from aigc_core.training.loop import Interrupted, capture

CPU = torch.device("cpu")
SIZE = 8  # tiny images keep every test to a second or two
TINY = dict(image_size=SIZE, block_out_channels=(4, 8), norm_groups=4, sampling_steps=3)
FAST = {"image_size": SIZE}  # model overrides of the smoke preset
PYFUNC = Path(__file__).parents[2] / "tasks" / "pyfunc_model.py"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread (a parallel region costs more than their ops)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny conditional model trained through the engine (30 steps of the smoke preset)."""
    return run(tmp_path_factory.mktemp("trained"), "a", steps=30, log_every=10, lr=5e-3)


def tiny_model(num_classes: int = 3, **kw) -> DiffusionModel:
    torch.manual_seed(0)
    cfg = DiffusionConfig(**{**TINY, "conditional": num_classes > 0, **kw}, num_classes=num_classes)
    return DiffusionModel(cfg).eval()


def digits_like(n: int = 96, classes: int = 3) -> TrainData:
    """Grey images with one lighter bar per class, in [0.25, 0.75], and their labels."""
    labels = torch.arange(n) % classes
    images = torch.full((n, 1, SIZE, SIZE), 0.25)
    for i, k in enumerate(labels.tolist()):
        images[i, 0, 2 * k : 2 * k + 2, :] = 0.75
    return TrainData(
        images=images,
        labels=labels,
        val_images=images[:24],
        val_labels=labels[:24],
        num_classes=classes,
    )


def run(tmp_path, name, steps=8, resume=False, stop=None, data=None, **overrides):
    return engine.train_model(
        families.get("diffusion"),
        "smoke",
        data or digits_like(),
        CPU,
        tmp_path / name,
        resume=resume,
        overrides={"steps": steps, "bf16": False, **overrides},
        model_overrides=FAST,
        stop=stop,
    )


# --- the network ------------------------------------------------------------------------------


def test_the_network_predicts_noise_of_the_images_shape():
    model = tiny_model(3)
    x, t = torch.randn(5, 1, SIZE, SIZE), torch.randint(1000, (5,))
    assert model(x, t, torch.tensor([0, 1, 2, 3, 3])).shape == (5, 1, SIZE, SIZE)  # 3: no label
    assert model.null_label == 3
    with pytest.raises(ValueError, match="conditional: give labels"):
        model(x, t)
    uncond = tiny_model(0)
    assert uncond(x, t).shape == (5, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="unconditional"):
        uncond(x, t, torch.zeros(5, dtype=torch.int64))
    rgb = DiffusionModel(DiffusionConfig(**{**TINY, "channels": 3}, attention=True))
    assert rgb(torch.randn(2, 3, SIZE, SIZE), torch.tensor([1, 999])).shape == (2, 3, SIZE, SIZE)


def test_bad_configs_fail_early_and_name_the_fix():
    with pytest.raises(ValueError, match=r"image_size 28 must be divisible by 8 .* 4 blocks"):
        DiffusionConfig(block_out_channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"norm_groups 8 must divide every block's channels"):
        DiffusionConfig(block_out_channels=(12, 16))
    with pytest.raises(ValueError, match="num_classes is 3 but conditional is false"):
        DiffusionConfig(conditional=False, num_classes=3)
    with pytest.raises(ValueError, match="sampler"):
        DiffusionConfig(sampler="euler")
    with pytest.raises(ValueError, match="sampling_steps 2000 exceeds"):
        DiffusionConfig(sampling_steps=2000)


# --- settings and prepare ---------------------------------------------------------------------


def test_num_classes_comes_from_the_data_and_cannot_be_set():
    family = families.get("diffusion")
    with pytest.raises(
        SettingsError,
        match=r"model.num_classes is filled in from the training data by the diffusion family",
    ):
        resolve(family, "smoke", {"model": {"num_classes": 3}})
    r = resolve(family, "cpu", {"model": {"block_out_channels": [16, 32], "guidance": 3}})
    assert r.model_cfg.blocks == (16, 32) and r.model_cfg.guidance == 3.0
    with pytest.raises(SettingsError, match="image_size 28 must be divisible by 8"):
        resolve(family, "cpu", {"model": {"block_out_channels": [8, 8, 8, 8]}})


def test_prepare_fills_in_the_classes_and_trains_one_class_unconditional(caplog):
    cfg = family_module.PRESETS["smoke"].model
    assert family_module.prepare(cfg, TrainData(num_classes=10)).num_classes == 10
    with caplog.at_level(logging.INFO, logger="aigc_core.families.diffusion"):
        one = family_module.prepare(cfg, TrainData(num_classes=1))
    assert one.num_classes == 0 and "1 class: training an unconditional" in caplog.text
    off = family_module.prepare(
        DiffusionConfig(**{**TINY, "conditional": False}), TrainData(num_classes=10)
    )
    assert off.num_classes == 0
    with pytest.raises(ValueError, match="trained on 3 classes, this snapshot has 10"):
        family_module.prepare(DiffusionConfig(**TINY, num_classes=3), TrainData(num_classes=10))


# --- training ---------------------------------------------------------------------------------


def test_training_through_the_engine_lowers_the_loss(trained):
    r = trained
    first, last = r.history[0], r.history[-1]
    assert last["loss"] < first["loss"] and last["val_loss"] < first["val_loss"]
    assert r.model_cfg.num_classes == 3
    module, cfg = r.served_module()
    assert cfg["family"] == "diffusion" and cfg["num_classes"] == 3
    # the served module holds the moving average, not the last weights
    for p, ema in zip(module.parameters(), r.job.ema.shadow_params, strict=True):
        assert torch.equal(p, ema)
    assert any(
        not torch.equal(p, q)
        for p, q in zip(module.parameters(), r.job.model.parameters(), strict=True)
    )


def test_a_resumed_run_continues_exactly_with_its_moving_average(tmp_path):
    full = run(tmp_path, "full", steps=8, checkpoint_every=4, log_every=4)
    calls = iter(range(100))
    with pytest.raises(Interrupted) as e:  # asked to stop after its 4th step
        run(tmp_path, "part", steps=8, checkpoint_every=4, log_every=4,
            stop=lambda: next(calls) >= 3)  # fmt: skip
    assert e.value.step == 4
    resumed = run(tmp_path, "part", steps=8, checkpoint_every=4, log_every=4, resume=True)
    assert resumed.start_step == 4
    a, b = capture(full.job, 8, {}), capture(resumed.job, 8, {})
    for x, y in zip(a["modules"]["model"].values(), b["modules"]["model"].values(), strict=True):
        assert torch.equal(x, y)
    ema_a, ema_b = a["optimizers"]["ema"], b["optimizers"]["ema"]
    assert ema_a["optimization_step"] == ema_b["optimization_step"] == 8
    for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"], strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert torch.equal(
        a["optimizers"]["model"]["state"][0]["exp_avg"],
        b["optimizers"]["model"]["state"][0]["exp_avg"],
    )
    assert full.history[-1]["val_loss"] == resumed.history[-1]["val_loss"]


def test_a_warm_start_sets_the_weights_and_their_average(tmp_path):
    first = run(tmp_path, "a", steps=4)
    module, cfg = first.served_module()
    save_model(tmp_path / "model", module, cfg)
    family = families.get("diffusion")
    job = family.build_job(first.model_cfg, first.train_cfg, digits_like(), CPU)
    from aigc_core.models.io import read_weights

    family.served_module(job).load_state_dict(read_weights(tmp_path / "model" / WEIGHTS))
    for p, q, s in zip(
        module.parameters(), job.model.parameters(), job.ema.shadow_params, strict=True
    ):
        assert torch.equal(p, q) and torch.equal(p, s)


def test_an_unlabelled_snapshot_trains_an_unconditional_model(tmp_path):
    data = digits_like()
    data = TrainData(images=data.images, val_images=data.val_images)  # no labels, 0 classes
    r = run(tmp_path, "u", steps=2, data=data)
    assert r.model_cfg.num_classes == 0 and r.job.labels is None


# --- sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_guidance_runs_both_halves_in_one_batch_and_matches_its_limits(sampler):
    model = tiny_model(3)
    noise = torch.randn(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0])
    cond = sample(model, noise, y, 1.0, 4, sampler)  # the conditional half only
    uncond = sample(model, noise, y, 0.0, 4, sampler)  # the "no label" half only
    assert cond.shape == (4, 1, SIZE, SIZE) and cond.abs().max() <= 1
    # the batched 2B path at w near 1 and near 0 agrees with the single halves
    assert torch.allclose(sample(model, noise, y, 1.0 + 1e-6, 4, sampler), cond, atol=1e-4)
    assert torch.allclose(sample(model, noise, y, 1e-6, 4, sampler), uncond, atol=1e-4)
    assert not torch.allclose(sample(model, noise, y, 3.0, 4, sampler), cond, atol=1e-3)


def test_same_seed_same_images_whatever_the_batch_size(trained):
    gen = DiffusionGenerator(trained.served_module()[0])
    seen = []
    whole = gen.generate(7, seed=5, batch_size=7)
    torch.set_num_threads(2)  # batches on two threads, one each
    try:
        parts = gen.generate(7, seed=5, batch_size=3, on_batch=lambda done, n: seen.append(done))
    finally:
        torch.set_num_threads(1)
    assert whole.shape == (7, 1, SIZE, SIZE) and whole.dtype == np.float32
    assert whole.min() >= 0 and whole.max() <= 1
    np.testing.assert_allclose(whole, parts, atol=1e-5)
    assert seen == [3, 6, 7]
    assert not np.allclose(whole, gen.generate(7, seed=6), atol=1e-3)


def test_guidance_steps_and_labels_change_the_images_and_defaults_are_the_configs(trained):
    gen = DiffusionGenerator(trained.served_module()[0])
    cfg = gen.module.cfg
    base = gen.generate(4, seed=0)
    explicit = gen.generate(
        4, seed=0, labels=np.arange(4) % 3, guidance=cfg.guidance, sampling_steps=cfg.sampling_steps
    )
    np.testing.assert_array_equal(base, explicit)  # no labels: the classes in turn
    np.testing.assert_array_equal(base, gen.generate(4, seed=0, guidance=-1.0, sampling_steps=0))
    assert not np.allclose(base, gen.generate(4, seed=0, guidance=0.0), atol=1e-3)
    assert not np.allclose(base, gen.generate(4, seed=0, sampling_steps=5), atol=1e-3)
    assert not np.allclose(base, gen.generate(4, seed=0, labels=np.full(4, 2)), atol=1e-3)
    ddim = DiffusionModel(dataclasses.replace(cfg, sampler="ddim"))
    ddim.load_state_dict(gen.module.state_dict())
    three = gen.generate(4, seed=0, sampling_steps=3)  # one step: both give the x0 estimate
    assert not np.allclose(
        three, DiffusionGenerator(ddim).generate(4, seed=0, sampling_steps=3), atol=1e-3
    )


def test_bad_labels_and_options_are_refused():
    uncond = DiffusionGenerator(tiny_model(0))
    assert uncond.num_classes == 0 and uncond.generate(2, seed=0).shape == (2, 1, SIZE, SIZE)
    with pytest.raises(LabelsError, match="unconditional"):
        uncond.generate(2, seed=0, labels=np.array([0, 1]))
    gen = DiffusionGenerator(tiny_model(3))
    assert gen.num_classes == 3
    with pytest.raises(LabelsError, match="label 3 is out of range"):
        gen.generate(2, seed=0, labels=np.array([0, 3]))
    with pytest.raises(LabelsError, match=r"\(2,\) integers"):
        gen.generate(2, seed=0, labels=np.array([0]))
    with pytest.raises(ValueError, match="unknown generation option.*temperature"):
        gen.generate(2, seed=0, temperature=1.0)
    with pytest.raises(ValueError, match="sampling_steps must be an integer"):
        gen.generate(2, seed=0, sampling_steps=2.5)
    with pytest.raises(ValueError, match="guidance must be a number"):
        gen.generate(2, seed=0, guidance=float("nan"))


def test_save_and_load_without_pickle_gives_the_same_samples(tmp_path):
    module = tiny_model(3)
    paths = save_model(tmp_path, module, module.cfg.to_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG, WEIGHTS]
    loaded = load_generator(paths["weights"], paths["config"])
    assert loaded.module.cfg == module.cfg
    np.testing.assert_array_equal(
        loaded.generate(3, seed=1), DiffusionGenerator(module).generate(3, seed=1)
    )
    family = families.get("diffusion")
    assert isinstance(family.load_generator(paths["weights"], paths["config"]), DiffusionGenerator)


def test_predict_takes_labels_guidance_and_steps_as_params():
    gen = DiffusionGenerator(tiny_model(3))
    params = dict(families.get("diffusion").params_example)  # the defaults MLflow fills in
    out = gen.predict(pd.DataFrame({"n": [3], "seed": [0]}), params)
    assert list(out["label"]) == [-1, -1, -1] and len(out) == 3
    out = gen.predict(pd.DataFrame({"n": [2], "seed": [0]}), {**params, "labels": "2"})
    assert list(out["label"]) == [2, 2]
    with pytest.raises(ValueError, match="sampling_steps"):
        gen.predict(pd.DataFrame({"n": [1], "seed": [0]}), {**params, "sampling_steps": -3})


def test_a_served_diffusion_model_requires_diffusers():
    from importlib.metadata import version

    from aigc_core.serving.environment import model_environment

    env = model_environment(PYFUNC)
    assert f"diffusers=={version('diffusers')}" in env.requirements
    assert {"aigc_core.families.diffusion", "aigc_core.generation.diffusion"} <= set(env.modules)
