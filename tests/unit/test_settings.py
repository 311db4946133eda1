"""Settings: a config file and --set items over a family's preset (`aigc_core.settings`), the
typed configs they are checked against, the digest of a resolved config and the JSON Schema."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle

import pytest

from aigc_core import families, settings
from aigc_core.curation.policy import Policy
from aigc_core.families import images
from aigc_core.families.base import Family, Preset
from aigc_core.models.dcgan import DCGANConfig
from aigc_core.settings import SettingsError, load_overrides, resolve
from aigc_core.training import lm
from aigc_core.training.loop import TrainConfig

BUILTIN = ("dcgan", "vae", "charlstm", "transformer", "diffusion")
# one model field per family that a config file may change, and a value for it
MODEL_FIELD = {
    "dcgan": "g_width",
    "vae": "width",
    "charlstm": "hidden",
    "transformer": "n_embd",
    "diffusion": "layers_per_block",
}


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- load_overrides: syntax ---------------------------------------------------------------------


def test_a_file_and_set_items_merge_with_set_winning(tmp_path):
    f = write(
        tmp_path,
        "run.yaml",
        "model:\n  g_width: 32\ntrain:\n  lr: 2e-4\n  steps: 100\ncuration:\n"
        "  image: {min_confidence: 0.8}\n  text:\n    max_top_ngram_fraction: {2: 0.2}\n",
    )
    got = load_overrides(
        f,
        [
            "train.steps=7",  # wins over the file
            "train.bf16=false",
            "curation.text.blocklist=[spam, 'bad phrase']",
            "curation.image.min_train_distance=",  # empty: null, the scorer off
            "curation.text.max_top_ngram_fraction.2=0.3",  # the file's int key 2
        ],
    )
    assert got == {
        "model": {"g_width": 32},
        "train": {"lr": 2e-4, "steps": 7, "bf16": False},  # 2e-4 a number, as YAML 1.2 reads
        "curation": {
            "image": {"min_confidence": 0.8, "min_train_distance": None},
            "text": {"max_top_ngram_fraction": {"2": 0.3}, "blocklist": ["spam", "bad phrase"]},
        },
    }
    assert json.loads(json.dumps(got)) == got  # plain JSON: a flow parameter as it is


def test_values_are_typed_yaml_scalars_and_empty_sections_are_left_out(tmp_path):
    got = load_overrides(
        None, ["train.a=3", "train.b=3.0", "train.c=1e3", "train.d=yes", "train.e='3'"]
    )
    assert got == {"train": {"a": 3, "b": 3.0, "c": 1000.0, "d": True, "e": "3"}}
    assert type(got["train"]["a"]) is int and type(got["train"]["c"]) is float
    assert load_overrides(None, []) == {}
    assert load_overrides(write(tmp_path, "e.yaml", "model:\ntrain: {}\n"), ()) == {}
    j = write(tmp_path, "c.json", json.dumps({"train": {"lr": 0.01}, "model": {}}))
    assert load_overrides(j, None) == {"train": {"lr": 0.01}}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("trian:\n  lr: 1\n", r"bad.yaml: unknown section\(s\) 'trian'; allowed: model, train"),
        ("- train\n", r"bad.yaml: expected a mapping with sections model, train, curation"),
        ("train: 3\n", r"bad.yaml: section 'train' must be a mapping of settings, got int 3"),
        ("train: {lr: [1, 2\n", r"config file .*bad.yaml is not valid yaml"),
        (
            "train: {start: 2024-01-01}\n",
            r"bad.yaml: train.start: datetime.date\(2024, 1, 1\)",
        ),
        ("train: {lr: .nan}\n", r"bad.yaml: train.lr: nan is not a finite number"),
    ],
)
def test_a_bad_file_is_an_error_naming_it(tmp_path, text, match):
    with pytest.raises(SettingsError, match=match):
        load_overrides(write(tmp_path, "bad.yaml", text), [])


def test_a_missing_or_unreadable_file_is_an_error(tmp_path):
    with pytest.raises(SettingsError, match=r"cannot read config file .*nope.yaml: No such file"):
        load_overrides(tmp_path / "nope.yaml", [])
    with pytest.raises(SettingsError, match=r"must end in .yaml, .yml or .json"):
        load_overrides(write(tmp_path, "run.toml", "[train]\n"), [])
    with pytest.raises(SettingsError, match=r"c.json is not valid json"):
        load_overrides(write(tmp_path, "c.json", "{'train': 1}"), [])


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("train.lr", r"--set 'train.lr': expected KEY=VALUE, e.g. train.lr=2e-4"),
        ("lr=2e-4", r"--set 'lr=2e-4': KEY must be SECTION.NAME with SECTION one of model, train"),
        ("optim.lr=1", r"KEY must be SECTION.NAME"),
        ("train..lr=1", r"KEY must be SECTION.NAME"),
        ("train=1", r"KEY must be SECTION.NAME"),
        ("train.lr=[1, 2", r"--set 'train.lr=\[1, 2': '\[1, 2' is not a YAML value"),
        ("curation.image.min_confidence.x=1", r"curation.image.min_confidence is 0.5, not a map"),
        ("train.lr=.inf", r"--set 'train.lr=.inf': train.lr: inf is not a finite number"),
    ],
)
def test_a_bad_set_item_is_an_error_naming_it(item, match):
    with pytest.raises(SettingsError, match=match):
        load_overrides(None, ["curation.image.min_confidence=0.5", item])


# --- resolve: against a family ------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_resolve_applies_model_and_train_overrides_of_every_family(name):
    family = families.get(name)
    model, train = family.preset("smoke")
    plain = resolve(family, "smoke", None)
    assert (plain.model_cfg, plain.train_cfg, plain.policy) == (model, train, Policy())
    field = MODEL_FIELD[name]
    value = getattr(model, field) * 2
    got = resolve(
        family,
        "smoke",
        {"model": {field: value}, "train": {"steps": 3, "seed": 7}, "curation": {}},
    )
    assert getattr(got.model_cfg, field) == value and type(got.model_cfg) is type(model)
    assert got.train_cfg == dataclasses.replace(train, steps=3, seed=7)
    assert got.train_cfg.total_steps == 3  # `steps` is every family's total
    # the resolved configs are what saved models and checkpoints store, and load back
    assert family.model_config(got.model_cfg.to_dict()) == got.model_cfg
    assert family.train_config(got.train_cfg.to_dict()) == got.train_cfg
    assert pickle.loads(pickle.dumps(got)) == got  # crosses process boundaries (Prefect, Dask)


@pytest.mark.parametrize("name", BUILTIN)
def test_an_unknown_key_is_an_error_listing_the_allowed_ones(name):
    family = families.get(name)
    with pytest.raises(SettingsError, match=rf"train.lrr: unknown train setting of {name}; "):
        resolve(family, "smoke", {"train": {"lrr": 1e-3}})
    with pytest.raises(SettingsError, match=r"model.widht: unknown model setting.*allowed: ") as e:
        resolve(family, "smoke", {"model": {"widht": 3}})
    assert MODEL_FIELD[name] in str(e.value) and "vocab" not in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"train": {"lr": -1}}, r"train.lr: Input should be greater than 0 \(got -1\)"),
        ({"train": {"lr": "fast"}}, r"train.lr: Input should be a valid number \(got 'fast'\)"),
        ({"train": {"batch_size": 0}}, r"train.batch_size: .*greater than or equal to 1"),
        ({"train": {"steps": 2.5}}, r"train.steps: Input should be a valid integer"),
        ({"train": {"steps": True}}, r"train.steps: Input should be a valid integer"),
        ({"train": {"bf16": "maybe"}}, r"train.bf16: Input should be a valid boolean"),
        ({"train": {"min_lr_ratio": 1.5}}, r"train.min_lr_ratio: .*less than or equal to 1"),
        ({"model": {"beta": -0.5}}, r"model.beta: .*greater than or equal to 0 \(got -0.5\)"),
        ({"model": {"image_size": 30}}, r"model: image_size must be a multiple of 4, got 30"),
        ({"curation": {"image": {"min_confidence": 2}}}, r"curation.image.min_confidence: "),
        ({"curation": {"image": {"min_confidense": 1}}}, r"unknown image threshold.*known: "),
        ({"curation": {"video": {}}}, r"unknown section\(s\) \['video'\] in curation"),
        ({"optim": {}}, r"unknown section\(s\) 'optim'"),
    ],
)
def test_a_bad_value_is_an_error_saying_what_is_allowed(overrides, match):
    with pytest.raises(SettingsError, match=match):
        resolve(families.get("vae"), "smoke", overrides)


def test_a_dropout_of_one_is_refused():
    with pytest.raises(SettingsError, match=r"model.dropout: Input should be less than 1"):
        resolve(families.get("dcgan"), "smoke", {"model": {"dropout": 1.0}})


def test_every_problem_is_reported_at_once_with_its_source():
    bad = {"model": {"z_dim": 0}, "train": {"lr": 0}, "curation": {"text": {"min_words": -1}}}
    with pytest.raises(SettingsError) as e:
        resolve(families.get("vae"), "smoke", bad, source="run.yaml")
    message = str(e.value)
    assert message.startswith("run.yaml: model.z_dim: ")
    assert "; train.lr: Input should be greater than 0 (got 0)" in message
    assert "curation.text.min_words: Input should be greater than or equal to 0" in message


def test_the_data_dependent_vocabulary_cannot_be_set():
    for name in ("charlstm", "transformer"):
        with pytest.raises(
            SettingsError,
            match=rf"model.vocab is filled in from the training data by the {name} family",
        ):
            resolve(families.get(name), "smoke", {"model": {"vocab": "abc"}})


def test_source_of_names_the_file_and_set_items():
    assert settings.source_of("run.yaml", ["train.lr=1"]) == "run.yaml, --set"
    assert settings.source_of(None, ["train.lr=1"]) == "--set"
    assert settings.source_of("run.yaml", None) == "run.yaml"
    assert settings.source_of(None, []) == ""


def test_an_unknown_preset_is_a_settings_error():
    with pytest.raises(SettingsError, match="unknown preset 'huge' for dcgan; choose one of"):
        resolve(families.get("dcgan"), "huge", None)


@dataclasses.dataclass(frozen=True)
class PlainModel:  # a plugin's config: a plain dataclass, no pydantic
    z_dim: int = 4

    def to_dict(self):
        return {"family": "plain", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class PlainTrain:
    steps: int = 1
    checkpoint_every: int = 0


PLAIN = Family(
    name="plain",
    kind="image",
    presets={"smoke": Preset(PlainModel(), PlainTrain())},
    model_config=lambda d: PlainModel(**d),
    train_config=lambda d: PlainTrain(**d),
    build_job=lambda m, t, data, device: None,
    served_module=lambda job: job,
    load_generator=lambda *a, **k: None,
    evaluate=lambda inputs: None,
    policy=images.GATE,
    input_example=images.INPUT_EXAMPLE,
)


def test_a_plugins_plain_dataclass_configs_take_overrides_too():
    got = resolve(PLAIN, "smoke", {"model": {"z_dim": 8}, "train": {"steps": 5}})
    assert got.model_cfg == PlainModel(z_dim=8) and got.train_cfg == PlainTrain(steps=5)
    with pytest.raises(SettingsError, match=r"model.z_dim: Input should be a valid integer"):
        resolve(PLAIN, "smoke", {"model": {"z_dim": "eight"}})
    with pytest.raises(SettingsError, match=r"train.epochs: unknown train setting of plain"):
        resolve(PLAIN, "smoke", {"train": {"epochs": 5}})
    assert len(got.digest()) == 64
    schema = settings.json_schema(PLAIN)
    assert set(schema["$defs"]["PlainModel"]["properties"]) == {"z_dim"}


# --- Resolved: to_dict, flat, digest ------------------------------------------------------------


def test_to_dict_and_flat_are_plain_json():
    r = resolve(families.get("charlstm"), "smoke", {"train": {"lr": 0.01}})
    d = r.to_dict()
    assert set(d) == {"model", "train", "curation"} and json.loads(json.dumps(d)) == d
    assert d["model"]["family"] == "charlstm" and d["train"]["lr"] == 0.01
    flat = r.flat()
    assert flat["train.lr"] == 0.01 and flat["curation.image.min_confidence"] == 0.9
    assert flat["curation.text.max_top_ngram_fraction.2"] == 0.2
    assert flat["curation.text.pii"] == ["email", "phone", "ipv4", "credit_card"]


def test_the_digest_is_canonical_json_of_model_and_train():
    family = families.get("dcgan")
    r = resolve(family, "smoke", {"train": {"lr": 3e-4, "seed": 1}, "model": {"z_dim": 50}})
    derived = settings.derived_fields(r.model_cfg)  # num_classes: the data's, not a setting
    model = {k: v for k, v in r.to_dict()["model"].items() if k not in derived}
    train = r.to_dict()["train"]
    canonical = json.dumps({"model": model, "train": train}, sort_keys=True, separators=(",", ":"))
    assert r.digest() == hashlib.sha256(canonical.encode()).hexdigest()
    # the same settings in another order, from another dict: the same digest
    again = resolve(family, "smoke", {"model": {"z_dim": 50}, "train": {"seed": 1, "lr": 3e-4}})
    assert again.digest() == r.digest()
    # int and float spellings of one value are one value once validated
    assert resolve(family, "smoke", {"train": {"lr": 1}}).digest() == (
        resolve(family, "smoke", {"train": {"lr": 1.0}}).digest()
    )


def test_the_digest_follows_training_settings_only():
    family = families.get("dcgan")
    base = resolve(family, "smoke", None).digest()
    assert resolve(family, "smoke", {"train": {"lr": 3e-4}}).digest() != base
    assert resolve(family, "smoke", {"model": {"z_dim": 50}}).digest() != base
    assert resolve(family, "cpu", None).digest() != base
    curated = {"curation": {"image": {"min_confidence": 0.5}, "text": {"blocklist": ["x"]}}}
    assert resolve(family, "smoke", curated).digest() == base  # curation trains nothing
    # a preset with the same values as an override of another: the same training
    cpu = family.preset("cpu")
    model = {k: v for k, v in cpu.model.to_dict().items() if k not in ("family", "num_classes")}
    same = {"model": model, "train": cpu.train.to_dict()}
    assert resolve(family, "smoke", same).digest() == resolve(family, "cpu", None).digest()


def test_the_digest_is_the_same_before_and_after_the_vocabulary_is_filled_in():
    r = resolve(families.get("transformer"), "smoke", None)
    prepared = lm.with_vocab(r.model_cfg, "abc ")
    assert prepared.vocab == "abc " and r.model_cfg.vocab == ""
    assert settings.config_digest(prepared, r.train_cfg) == r.digest()


# --- the configs themselves ---------------------------------------------------------------------


def test_configs_check_their_values_on_construction_and_replace():
    with pytest.raises(ValueError, match=r"z_dim\n.*greater than or equal to 1"):
        DCGANConfig(z_dim=0)
    with pytest.raises(ValueError, match=r"Unexpected keyword argument"):
        DCGANConfig(zdim=3)  # a saved config with an unknown key fails as before
    with pytest.raises(ValueError, match=r"lr\n.*greater than 0"):
        dataclasses.replace(TrainConfig(), lr=0.0)
    cfg = TrainConfig(lr=1)  # an int where a float is expected is that float
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    assert dataclasses.asdict(cfg) == cfg.to_dict()
    assert [f.name for f in dataclasses.fields(cfg)][:3] == ["batch_size", "steps", "lr"]


def test_saved_configs_of_every_family_load_back():
    for name in BUILTIN:
        family = families.get(name)
        for preset in family.presets.values():
            saved = json.loads(json.dumps(preset.model.to_dict()))  # as config.json holds it
            saved["vocab"] = "ab\n" if "vocab" in saved else None
            saved = {k: v for k, v in saved.items() if v is not None}
            assert family.model_config(saved).to_dict() == saved
            stored = json.loads(json.dumps(preset.train.to_dict()))  # as a checkpoint holds it
            assert family.train_config(stored) == preset.train


# --- JSON Schema --------------------------------------------------------------------------------


def test_the_schema_without_a_family_has_the_three_sections():
    schema = settings.json_schema()
    assert schema["$schema"] == settings.JSON_SCHEMA_DIALECT
    assert list(schema["properties"]) == ["model", "train", "curation"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["model"]["type"] == "object"
    assert "aigc config schema --model FAMILY" in schema["properties"]["train"]["description"]
    assert {"Policy", "ImagePolicy", "TextPolicy"} <= set(schema["$defs"])


@pytest.mark.parametrize("name", BUILTIN)
def test_a_familys_schema_lists_its_settable_fields_without_defaults(name):
    family = families.get(name)
    schema = settings.json_schema(family)
    model_ref = schema["properties"]["model"]["$ref"].rsplit("/", 1)[-1]
    model = schema["$defs"][model_ref]
    model_cfg, train_cfg = family.preset("smoke")
    fields = {f.name for f in dataclasses.fields(model_cfg)} - {"vocab", "num_classes"}
    assert set(model["properties"]) == fields  # the vocabulary is not settable
    assert "required" not in model and model["additionalProperties"] is False
    assert all("default" not in p for p in model["properties"].values())  # the preset's apply
    assert "keeps the preset's value" in model["description"]
    train_ref = schema["properties"]["train"]["$ref"].rsplit("/", 1)[-1]
    train = schema["$defs"][train_ref]
    assert set(train["properties"]) == {f.name for f in dataclasses.fields(train_cfg)}
    assert train["properties"]["lr"]["exclusiveMinimum"] == 0
    assert train["properties"]["steps"]["type"] == "integer"


def test_the_schema_validates_config_files_as_resolve_does():
    jsonschema = pytest.importorskip("jsonschema")
    schema = settings.json_schema(families.get("charlstm"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "model": {"hidden": 64},
        "train": {"lr": 2e-4, "steps": 100, "bf16": False},
        "curation": {"text": {"blocklist": ["x"], "max_top_ngram_fraction": {"2": 0.3}}},
    }
    assert not list(validator.iter_errors(good))
    resolve(families.get("charlstm"), "smoke", good)  # and resolve agrees
    for bad in (
        {"train": {"lrr": 1}},  # a typo
        {"train": {"lr": -1}},
        {"train": {"steps": 1.5}},
        {"model": {"vocab": "abc"}},  # data-dependent
        {"curation": {"image": {"min_confidence": 1.5}}},
        {"curation": {"text": {"pii": ["ssn"]}}},
        {"optim": {}},
    ):
        assert list(validator.iter_errors(bad)), bad
        with pytest.raises(SettingsError):
            resolve(families.get("charlstm"), "smoke", bad)
