"""Model families: the registry (built-ins, plugins through entry points, unknown and broken
ones), presets and `to_dict`, and every built-in family end to end through its contract: trains
two steps, saves its served module, loads its generator and answers its input example."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import textwrap

import pandas as pd
import pytest
import torch

from aigc_core import families
from aigc_core.families import images
from aigc_core.families.base import Family, TrainData
from aigc_core.generation.audio import AudioGenerator
from aigc_core.generation.images import ImageGenerator
from aigc_core.generation.text import TextGenerator
from aigc_core.generation.textvae import TextVAEGenerator
from aigc_core.models.io import save_model
from aigc_core.training import engine

CPU = torch.device("cpu")
TEXT = "The sea shells she sells by the sea shore.\n" * 40  # the input example: "The "

# A plugin's family, as a separate package would write it: an image family reusing the image
# building blocks (its served module maps (B, z) -> images in [-1, 1] and has cfg.z_dim).
PLUGIN = """
import dataclasses

import torch
from torch import nn

from aigc_core.families import images
from aigc_core.families.base import Family, Preset
from aigc_core.models.io import config_fields


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    z_dim: int = 4

    def to_dict(self):
        return {"family": "mlp", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class MLPTrain:
    steps: int = 1
    checkpoint_every: int = 0

    @property
    def total_steps(self):
        return self.steps


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Linear(cfg.z_dim, 28 * 28)

    def forward(self, z):
        return torch.tanh(self.net(z)).view(-1, 1, 28, 28)


def model_config(d):
    return MLPConfig(**config_fields(d))


load = images.generator_loader(MLP, model_config)
FAMILY = Family(
    name="mlp",
    kind="image",
    presets={"smoke": Preset(MLPConfig(), MLPTrain())},
    model_config=model_config,
    train_config=lambda d: MLPTrain(**d),
    build_job=lambda m, t, data, device: None,
    served_module=lambda job: job,
    load_generator=load,
    evaluate=images.evaluator(load),
    policy=images.GATE,
    input_example=images.INPUT_EXAMPLE,
)


def make_family():
    return FAMILY


def broken():
    raise RuntimeError("no GPU driver")


NOT_A_FAMILY = object()
TAKES_A_BUILTIN_NAME = __import__("dataclasses").replace(FAMILY, name="dcgan")
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Installs a fake distribution whose entry points name families (good and bad ones); the
    registry is read afresh, and again after the test."""
    (tmp_path / "aigc_fake_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "aigc_fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aigc-fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [aigc.families]
            mlp = aigc_fake_plugin:FAMILY
            mlp_factory = aigc_fake_plugin:make_family
            broken = aigc_fake_plugin:broken
            missing = aigc_fake_plugin:NO_SUCH_NAME
            not_a_family = aigc_fake_plugin:NOT_A_FAMILY
            impostor = aigc_fake_plugin:TAKES_A_BUILTIN_NAME
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    families.available.cache_clear()
    yield
    families.available.cache_clear()


def test_the_built_in_families_and_their_gates():
    found = families.available()
    assert list(found)[:7] == [
        "dcgan",
        "vae",
        "charlstm",
        "transformer",
        "diffusion",
        "textvae",
        "wavegan",
    ]
    assert families.family_names("image")[:3] == ["dcgan", "vae", "diffusion"]
    assert families.family_names("text")[:3] == ["charlstm", "transformer", "textvae"]
    assert families.family_names("audio")[:1] == ["wavegan"]
    assert families.get("wavegan").policy.gate_metrics == [
        "fad",
        "evaluator_accuracy",
        "memorization_rate",
    ]
    assert families.get("wavegan").params_example == {"labels": ""}  # as the image families'
    assert families.get("wavegan").curation == "audio"
    assert families.get("textvae").policy.gate_metrics == [
        "neg_elbo_per_char",
        "active_units",
        "kl",
        "distinct_2",
        "novelty",
    ]
    assert families.get("dcgan").policy.gate_metrics == [
        "fid",
        "evaluator_accuracy",
        "memorization_rate",
    ]
    assert families.get("vae").policy.metric == "neg_elbo"
    assert families.get("vae").policy.gate_metrics[1:] == [
        "evaluator_accuracy",
        "memorization_rate",
    ]
    for name in ("charlstm", "transformer"):
        policy = families.get(name).policy
        assert policy.metric == "bits_per_char" and policy.lower_is_better
        assert dict(policy.minimums) == {"distinct_2": 0.2, "novelty": 0.1}
    assert families.get("dcgan").final_metrics == {
        "final_loss_g": "loss_g",
        "final_loss_d": "loss_d",
    }
    assert families.get("charlstm").input_example == {"prompt": ["The "]}
    assert set(families.get("transformer").params_example) == {
        "temperature",
        "top_k",
        "top_p",
        "max_new_tokens",
        "stop",
        "seed",
    }
    assert families.get("vae").input_example == {"n": [2], "seed": [0]}
    assert families.get("vae").params_example == {"labels": ""}  # the requested classes
    for family in found.values():
        assert family.curation == family.kind
        pickle.loads(pickle.dumps(family))  # plain values and module functions only


def test_an_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown model family 'gpt9'; choose one of dcgan, vae"):
        families.get("gpt9")


def test_plugins_are_found_through_entry_points_and_broken_ones_are_reported(plugins, caplog):
    with caplog.at_level(logging.WARNING, logger="aigc_core.families"):
        found = families.available()
    assert list(found) == [
        "dcgan",
        "vae",
        "charlstm",
        "transformer",
        "diffusion",
        "textvae",
        "wavegan",
        "mlp",
    ]
    assert families.get("mlp").kind == "image" and "mlp" in families.family_names("image")
    assert families.get("dcgan").name == "dcgan"  # the built-in, not the impostor
    log = caplog.text
    assert "'broken' (aigc_fake_plugin:broken) failed to load: no GPU driver" in log
    assert "'missing'" in log and "failed to load" in log
    assert "'not_a_family' (aigc_fake_plugin:NOT_A_FAMILY) is not a Family" in log
    assert "'impostor' (aigc_fake_plugin:TAKES_A_BUILTIN_NAME) reuses the name 'dcgan'" in log
    # mlp_factory returns the same family (a function is called): its name is taken already
    assert "'mlp_factory'" in log and "reuses the name 'mlp'" in log


def test_a_plugin_family_loads_its_generator_with_the_shared_blocks(plugins, tmp_path):
    import aigc_fake_plugin  # the plugin's module, importable once installed

    mlp = families.get("mlp")
    cfg = aigc_fake_plugin.MLPConfig()
    paths = save_model(tmp_path / "m", aigc_fake_plugin.MLP(cfg), cfg.to_dict())
    gen = mlp.load_generator(paths["weights"], paths["config"])
    assert isinstance(gen, ImageGenerator)
    out = gen.predict(pd.DataFrame(mlp.input_example))
    assert len(out) == 2 and {"png_base64", "height", "width"} <= set(out.columns)
    assert mlp.to_dict()["primary_metric"] == "fid"


def test_presets_and_to_dict():
    for family in families.available().values():
        assert {"smoke", "cpu", "gpu"} <= set(family.presets)
        model, train = family.preset("smoke")
        assert model.to_dict()["family"] == family.name and train.total_steps >= 1
        d = json.loads(json.dumps(family.to_dict()))
        assert d["name"] == family.name and d["kind"] == family.kind
        assert d["primary_metric"] == family.policy.metric and d["lower_is_better"] is True
        assert d["presets"]["smoke"]["model"] == model.to_dict()
        assert d["presets"]["smoke"]["train"] == train.to_dict()
    with pytest.raises(ValueError, match="unknown preset 'huge' for charlstm; choose one of"):
        families.get("charlstm").preset("huge")
    with pytest.raises(ValueError, match="kind 'video' is not one of"):
        Family(**{**_fields(families.get("dcgan")), "kind": "video"})
    with pytest.raises(ValueError, match="has no presets"):
        Family(**{**_fields(families.get("dcgan")), "presets": {}})


def _fields(family: Family) -> dict:
    return {f: getattr(family, f) for f in family.__dataclass_fields__}


def test_a_family_trains_on_its_kind_only():
    with pytest.raises(ValueError, match="the charlstm family trains on text; this snapshot"):
        engine.train_model(
            families.get("charlstm"), "smoke", TrainData(images=torch.rand(4, 1, 28, 28)), CPU, "x"
        )
    with pytest.raises(ValueError, match="the wavegan family trains on audio; this snapshot"):
        engine.train_model(
            families.get("wavegan"), "smoke", TrainData(images=torch.rand(4, 1, 28, 28)), CPU, "x"
        )


@pytest.mark.parametrize("name", families.BUILTIN)
def test_every_built_in_family_trains_saves_loads_and_predicts(tmp_path, name):
    family = families.get(name)
    pics = torch.rand(16, 1, 28, 28)
    clips = (torch.randn(16, 1, 1024) * 3000).to(torch.int16)  # int16 PCM, as a snapshot's
    data = TrainData(
        images=pics, val_images=pics[:8], text=TEXT, audio=clips, val_audio=clips[:8],
        sample_rate=8000,
    )  # fmt: skip
    r = engine.train_model(
        family,
        "smoke",
        data,
        CPU,
        tmp_path / "ckpt",
        overrides={"steps": 2, "bf16": False, **_log_every(family)},
    )
    assert r.history[-1]["step"] == 2 and r.family is family
    for logged in family.final_metrics.values():
        assert logged in r.history[-1], (logged, r.history[-1])
    module, config = r.served_module()
    assert config["family"] == name and not module.training
    paths = save_model(tmp_path / "model", module, config)
    gen = family.load_generator(paths["weights"], paths["config"])
    kinds = {"image": ImageGenerator, "text": (TextGenerator, TextVAEGenerator)}
    assert isinstance(gen, kinds.get(family.kind, AudioGenerator))
    for a, b in zip(module.state_dict().values(), gen.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    request = pd.DataFrame(family.input_example)
    out = gen.predict(request, dict(family.params_example))
    if family.kind == "image":
        assert len(out) == family.input_example["n"][0] and "png_base64" in out.columns
    elif family.kind == "audio":  # the snapshot's length and rate, whatever the preset said
        assert len(out) == family.input_example["n"][0] and "wav_base64" in out.columns
        assert (out["num_samples"] == 1024).all() and (out["sample_rate"] == 8000).all()
    else:
        wanted = family.params_example["max_new_tokens"]
        text, reason = out["text"].iloc[0], out["finish_reason"].iloc[0]
        if isinstance(gen, TextVAEGenerator):  # a sentence ends (EOS) or stops at max_len
            assert len(out) == 1 and len(text) <= min(wanted, gen.model.cfg.max_len + 1)
            assert reason in ("eos", "length")
        else:
            assert len(out) == 1 and len(text) == wanted and reason == "length"
    # warm start: the saved module fills the job's served part
    warm = engine.train_model(
        family,
        "smoke",
        data,
        CPU,
        tmp_path / "warm",
        init_from=tmp_path / "model",
        overrides={"steps": 1, "bf16": False, **_log_every(family)},
    )
    assert warm.model_cfg == r.model_cfg


def _log_every(family: Family) -> dict:
    """Log at step 1 and 2 where the train config can (the DCGAN logs once per epoch)."""
    train = family.preset("smoke").train
    return {"log_every": 1} if hasattr(train, "log_every") else {"steps_per_epoch": 1}


def test_image_building_blocks():
    assert images.gate("neg_elbo").minimums == images.GATE.minimums
    assert images.gate("neg_elbo").metric == "neg_elbo"


def test_the_families_command_lists_built_ins_and_plugins(plugins):
    from typer.testing import CliRunner

    from aigc.cli import app

    result = CliRunner().invoke(app, ["families", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [d["name"] for d in listed] == [
        "dcgan",
        "vae",
        "charlstm",
        "transformer",
        "diffusion",
        "textvae",
        "wavegan",
        "mlp",
    ]
    assert listed[0] == families.get("dcgan").to_dict()
    table = CliRunner().invoke(app, ["families"], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    for name in ("dcgan", "vae", "charlstm", "transformer", "mlp", "bits_per_char", "neg_elbo"):
        assert name in table.stdout


def test_wavegan_takes_the_snapshots_length_rate_and_classes():
    wavegan = families.get("wavegan")
    model, _ = wavegan.preset("smoke")
    clips = torch.zeros(6, 1, 1024, dtype=torch.int16)
    data = TrainData(audio=clips, sample_rate=16000, labels=torch.arange(6) % 3, num_classes=3)
    cfg = wavegan.prepare(model, data)
    assert (cfg.length, cfg.sample_rate, cfg.num_classes) == (1024, 16000, 3)
    with pytest.raises(
        ValueError, match="clips of 16 \\* 4\\*\\*k samples; this snapshot's are 1000"
    ):
        wavegan.prepare(model, TrainData(audio=clips[..., :1000], sample_rate=16000))
    # one class, no labels, or conditional off: an unconditional model
    for data, conditional in (
        (TrainData(audio=clips, sample_rate=16000, num_classes=1), True),
        (TrainData(audio=clips, sample_rate=16000), True),
        (
            TrainData(audio=clips, sample_rate=16000, labels=torch.arange(6) % 3, num_classes=3),
            False,
        ),
    ):
        asked = dataclasses.replace(model, conditional=conditional)
        assert wavegan.prepare(asked, data).num_classes == 0
    with pytest.raises(ValueError, match="trained on 3 classes, this snapshot has 5"):
        wavegan.prepare(cfg, TrainData(audio=clips, sample_rate=16000, num_classes=5))
    with pytest.raises(ValueError, match="the wavegan family trains on audio; this snapshot has"):
        wavegan.prepare(model, TrainData(images=torch.rand(2, 1, 28, 28)))


def test_a_warm_start_on_data_of_another_shape_names_the_setting(tmp_path):
    """A WaveGAN trained on 1024-sample clips cannot start a model of 4096-sample ones: the
    error names the derived setting that changed, not torch's tensor shapes."""
    wavegan = families.get("wavegan")
    train = {"steps": 1, "bf16": False}

    def data(length: int) -> TrainData:
        return TrainData(audio=torch.zeros(8, 1, length, dtype=torch.int16), sample_rate=8000)

    r = engine.train_model(wavegan, "smoke", data(1024), CPU, tmp_path / "a", overrides=train)
    save_model(tmp_path / "model", *r.served_module())
    with pytest.raises(ValueError, match=r"model.length 1024 -> 4096.*same shape") as e:
        engine.train_model(
            wavegan, "smoke", data(4096), CPU, tmp_path / "b",
            init_from=tmp_path / "model", overrides=train,
        )  # fmt: skip
    assert "size mismatch" not in str(e.value)
    # the clip length is the snapshot's, never a setting that would be quietly overridden
    with pytest.raises(engine.settings.SettingsError, match="model.length is filled in"):
        engine.configs(wavegan, "smoke", None, {"length": 1024})
