"""The shared loop and engine: loss goes down for every family, non-finite losses stop with
the last good checkpoint kept, warm starts load the saved model, presets and settings are
checked, `steps` sets every family's length, and signals stop training cleanly."""

from __future__ import annotations

import math
import signal

import pytest
import torch
from torch import nn

from aigc_core import families
from aigc_core.models.io import save_model
from aigc_core.training import engine, interrupt
from aigc_core.training.checkpoint import list_checkpoints, save_checkpoint
from aigc_core.training.loop import Interrupted, NonFiniteLoss, TrainConfig, capture, fit

CPU = torch.device("cpu")
TEXT = "she sells sea shells by the sea shore. " * 60


class ToyJob:
    """Fits y = 2x; from step `nan_at` on, its loss is NaN."""

    def __init__(self, nan_at: int | None = None):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.rng = torch.Generator().manual_seed(0)
        self.modules, self.optimizers = {"model": self.model}, {"model": self.opt}
        self.samples_per_step, self.nan_at = 8, nan_at

    def train_step(self, step):
        x = torch.randn(8, 1, generator=self.rng)
        loss = ((self.model(x) - 2 * x) ** 2).mean()
        if self.nan_at is not None and step >= self.nan_at:
            loss = loss * float("nan")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def evaluate(self):
        return {}


def test_non_finite_loss_stops_and_names_the_last_good_checkpoint(tmp_path):
    job = ToyJob(nan_at=13)

    def save(step):
        return save_checkpoint(tmp_path, step, capture(job, step, {}), keep=10)

    with pytest.raises(NonFiniteLoss) as e:
        fit(job, 40, log_every=5, checkpoint_every=5, save=save)
    assert e.value.step == 15  # found at the first check after step 13
    assert e.value.last_checkpoint.name == "ckpt-00000010.pt"
    # no checkpoint was written from the poisoned steps
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 5]
    kept = torch.load(e.value.last_checkpoint, weights_only=True)["modules"]["model"]
    assert all(torch.isfinite(v).all() for v in kept.values())


def test_fit_logs_every_n_steps_and_loss_goes_down():
    history = fit(ToyJob(), 30, log_every=10)
    assert [h["step"] for h in history] == [10, 20, 30]
    assert history[-1]["loss"] < history[0]["loss"] / 10
    assert all(h["samples_per_s"] > 0 for h in history)


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1.0, steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(10) == pytest.approx(1.0) and cfg.lr_at(100) == pytest.approx(0.1)


@pytest.mark.parametrize("family", ["charlstm", "transformer"])
def test_language_models_learn_and_report_bits_per_character(tmp_path, family):
    r = engine.train_model(
        families.get(family),
        "smoke",
        engine.TrainData(text=TEXT),
        CPU,
        tmp_path,
        overrides={"steps": 30, "log_every": 10, "lr": 1e-2},
    )
    first, last = r.history[0], r.history[-1]
    assert last["val_loss"] < first["val_loss"] - 0.3
    assert last["val_bpc"] == pytest.approx(last["val_loss"] / math.log(2))
    assert r.model_cfg.vocab == "".join(sorted(set(TEXT)))
    assert r.last_checkpoint.name == "ckpt-00000030.pt"


def test_vae_learns(tmp_path):
    images = torch.zeros(64, 1, 28, 28)
    images[::2, :, 8:20, 8:20] = 1.0
    r = engine.train_model(
        families.get("vae"),
        "smoke",
        engine.TrainData(images=images, val_images=images[:16]),
        CPU,
        tmp_path,
        overrides={"steps": 20, "log_every": 10},
    )
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    assert r.history[-1]["val_neg_elbo"] < 543  # 784 * ln 2: what a fair coin per pixel costs
    module, cfg = r.served_module()
    assert cfg["family"] == "vae" and module(torch.zeros(2, 8)).shape == (2, 1, 28, 28)


def test_dcgan_through_the_engine_matches_train_gan(tmp_path):
    from aigc_core.training.gan import GANTrainConfig, train_gan

    images = torch.rand(32, 1, 28, 28)
    r = engine.train_model(
        families.get("dcgan"),
        "smoke",
        engine.TrainData(images=images),
        CPU,
        tmp_path,
        overrides={"bf16": False},
    )
    model_cfg, train_cfg = families.get("dcgan").preset("smoke")
    gan, _ = train_gan(
        images, model_cfg, GANTrainConfig(**{**train_cfg.to_dict(), "bf16": False}), CPU
    )
    for a, b in zip(
        r.job.gan.generator.state_dict().values(), gan.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_warm_start_loads_the_saved_model_and_keeps_its_vocabulary(tmp_path):
    first = engine.train_model(
        families.get("transformer"), "smoke", engine.TrainData(text=TEXT), CPU, tmp_path / "a",
        overrides={"steps": 10},
    )  # fmt: skip
    module, cfg = first.served_module()
    save_model(tmp_path / "model", module, cfg)
    warm = engine.train_model(
        families.get("transformer"), "smoke", engine.TrainData(text=TEXT[:600]), CPU,
        tmp_path / "b", init_from=tmp_path / "model", overrides={"steps": 1, "lr": 1e-12},
    )  # fmt: skip
    assert warm.model_cfg.vocab == first.model_cfg.vocab
    for a, b in zip(
        module.state_dict().values(), warm.job.model.state_dict().values(), strict=True
    ):
        # lr 1e-12 (lr must be > 0): the weights are the warm-start ones, not a fresh init
        assert torch.allclose(a, b, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="is a transformer model, not charlstm"):
        engine.train_model(
            families.get("charlstm"), "smoke", engine.TrainData(text=TEXT), CPU, tmp_path / "c",
            init_from=tmp_path / "model",
        )  # fmt: skip


def test_unknown_family_and_preset_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model family 'gpt5'"):
        families.get("gpt5")
    with pytest.raises(ValueError, match="unknown preset 'huge' for vae"):
        families.get("vae").preset("huge")
    with pytest.raises(ValueError, match="unknown preset 'huge' for vae"):
        engine.train_config(families.get("vae"), "huge")
    for family in families.BUILTIN:
        assert {"smoke", "cpu", "gpu"} <= set(families.get(family).presets)


def test_nested_stop_on_signals_keeps_a_stop_requested_during_start_up():
    """The CLI's block is open from the start; the task layer's inner block must not clear a
    SIGTERM that arrived in between (issue 13: it was swallowed and training ran to the end)."""
    before = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    interrupt.request_stop()  # a stale request from an earlier run: the outer block clears it
    with interrupt.stop_on_signals():
        assert not interrupt.stop_requested()
        signal.raise_signal(signal.SIGTERM)  # during start-up
        with interrupt.stop_on_signals():
            assert interrupt.stop_requested()
        assert interrupt.stop_requested()
    assert {s: signal.getsignal(s) for s in interrupt.SIGNALS} == before


def test_sigint_requests_a_stop_like_sigterm_and_a_second_one_aborts():
    with interrupt.stop_on_signals():
        signal.raise_signal(signal.SIGINT)  # Ctrl-C: a stop request, not KeyboardInterrupt
        assert interrupt.stop_requested()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_start_up_aborts_at_once_and_training_inside_it_checkpoints_first():
    """While only importing (abort_on_signals) a signal ends the command at once; a training
    block inside polls the flag, and a stop it did not act on is raised when it ends."""
    with (
        interrupt.stop_on_signals(),
        pytest.raises(interrupt.StopRequested),
        interrupt.abort_on_signals(),
    ):
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("not stopped at once")
    with interrupt.stop_on_signals():
        with pytest.raises(interrupt.StopRequested), interrupt.abort_on_signals():
            with interrupt.stop_on_signals():  # e.g. the train task inside `aigc run`
                signal.raise_signal(signal.SIGTERM)
                assert interrupt.stop_requested()  # no exception mid-step
            pytest.fail("the pending stop was dropped")
        with pytest.raises(interrupt.StopRequested), interrupt.abort_on_signals():
            pytest.fail("a stop requested already must stop at once")


def test_a_stop_requested_at_the_first_step_checkpoints_it(tmp_path):
    with pytest.raises(Interrupted, match="stopped at step 1; checkpoint") as e:
        engine.train_model(
            families.get("charlstm"),
            "smoke",
            engine.TrainData(text=TEXT),
            CPU,
            tmp_path,
            stop=lambda: True,
        )
    assert e.value.checkpoint.name == "ckpt-00000001.pt"
    assert "before training started" in str(Interrupted.before_start())


@pytest.mark.parametrize("family", families.BUILTIN)
def test_steps_option_works_for_every_family(tmp_path, family):
    """`--steps` is one setting for every family (issue 13: the DCGAN's config had no `steps`
    and `aigc train --model dcgan --steps 80` crashed)."""
    images = torch.rand(16, 1, 28, 28)
    clips = (torch.randn(16, 1, 1024) * 3000).to(torch.int16)  # int16 PCM, as a snapshot's
    data = engine.TrainData(
        images=images, val_images=images[:4], text=TEXT, audio=clips, sample_rate=8000
    )
    r = engine.train_model(
        families.get(family), "smoke", data, CPU, tmp_path, overrides={"steps": 3, "bf16": False}
    )
    assert r.train_cfg.total_steps == 3 and r.history[-1]["step"] == 3
    assert r.last_checkpoint.name == "ckpt-00000003.pt"


def test_bad_training_settings_are_clear_errors():
    with pytest.raises(ValueError, match=r"train.steps: .*greater than or equal to 1 \(got 0\)"):
        engine.train_config(families.get("vae"), "smoke", {"steps": 0})
    with pytest.raises(ValueError, match=r"train.steps: .*valid integer \(got True\)"):
        engine.train_config(families.get("dcgan"), "smoke", {"steps": True})
    with pytest.raises(ValueError, match="train.iterations: unknown train setting of vae; allowed"):
        engine.train_config(families.get("vae"), "smoke", {"iterations": 5})
    # the DCGAN's steps=0 is its documented default: epochs * steps_per_epoch
    gan = engine.train_config(families.get("dcgan"), "smoke", {"steps": 0})
    assert gan.total_steps == gan.epochs * gan.steps_per_epoch
    # a DCGAN checkpoint written before `steps` existed still loads; its length is unchanged
    dcgan = families.get("dcgan")
    _, cfg = dcgan.preset("smoke")
    old = {k: v for k, v in cfg.to_dict().items() if k != "steps"}
    assert dcgan.train_config(old).total_steps == cfg.epochs * cfg.steps_per_epoch


def test_model_settings_reach_the_trained_model_and_its_checkpoint(tmp_path):
    """A config file's `model` section changes what is trained (`engine.configs`, the call
    the train task makes), is stored in the checkpoint, and is checked before anything runs."""
    family = families.get("dcgan")
    train = {"steps": 1, "bf16": False}
    model_cfg, train_cfg = engine.configs(family, "smoke", train, {"g_width": 4})
    assert model_cfg.g_width == 4 and train_cfg.total_steps == 1
    images = torch.rand(16, 1, 28, 28)
    data = engine.TrainData(images=images, val_images=images[:4])
    r = engine.train_model(
        family, "smoke", data, CPU, tmp_path / "a", overrides=train, model_overrides={"g_width": 4}
    )
    module, cfg = r.served_module()
    assert r.model_cfg == model_cfg and cfg["g_width"] == 4
    assert module.net[0].out_features == 7 * 7 * 4  # the generator is 4 channels wide
    stored = torch.load(r.last_checkpoint, weights_only=True)["config"]
    assert stored["model"]["g_width"] == 4  # a resume goes on with the same settings
    save_model(tmp_path / "model", module, cfg)
    with pytest.raises(engine.settings.SettingsError, match="a warm start keeps the saved model"):
        engine.train_model(
            family, "smoke", data, CPU, tmp_path / "b", init_from=tmp_path / "model",
            overrides=train, model_overrides={"g_width": 8},
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"model.g_width: .*greater than or equal to 1"):
        engine.train_model(
            family, "smoke", data, CPU, tmp_path / "c", model_overrides={"g_width": 0}
        )
    assert not (tmp_path / "c").exists()  # refused before anything was written
