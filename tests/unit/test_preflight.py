"""The CLI's checks of arguments before anything starts, and the exit-code table the README
documents."""

from __future__ import annotations

import re
from dataclasses import field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
from pydantic import Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from aigc import exit_codes, family_catalog, preflight
from aigc import registry_lookup as rl
from aigc_core import families, settings
from aigc_core.config_types import CONFIG, DerivedStr, PositiveFloat, PositiveInt
from aigc_core.paths import Home
from aigc_core.training import interrupt

ROOT = Path(__file__).parents[2]


def test_init_from(tmp_path, monkeypatch):
    home = Home(tmp_path / "home")
    folder = tmp_path / "model"
    folder.mkdir()
    preflight.init_from(home, None)
    preflight.init_from(home, str(folder))
    preflight.init_from(home, "runs:/0123/model")  # MLflow's to check
    with pytest.raises(preflight.MissingFile, match="--init-from .*nope: no such folder"):
        preflight.init_from(home, str(tmp_path / "nope"))
    with pytest.raises(rl.ModelRefError, match="no registered model 'm'"):
        preflight.init_from(home, "models:/m@champion")  # an empty registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://db/x")
    preflight.init_from(home, "models:/m@champion")  # only MLflow reads that store


def test_snapshot(tmp_path):
    home = Home(tmp_path)
    sid = "0123456789abcdef"
    with pytest.raises(preflight.MissingFile, match=f"no snapshot with id '{sid}'"):
        preflight.snapshot(home, sid)
    (home.datasets / "digits" / sid).mkdir(parents=True)  # staged, not yet published
    with pytest.raises(preflight.MissingFile):
        preflight.snapshot(home, sid)
    (home.datasets / "digits" / sid / "manifest.json").write_text("{}")
    preflight.snapshot(home, sid)


def test_dataset_source(tmp_path):
    preflight.dataset_source("digits", None, "image")
    preflight.dataset_source("anything", tmp_path, "text")  # the files decide
    with pytest.raises(preflight.MissingFile, match="unknown dataset 'nope'; built-in datasets"):
        preflight.dataset_source("nope", None)
    with pytest.raises(ValueError, match="'python-docs' holds text data; .* trains on image"):
        preflight.dataset_source("python-docs", None, "image")


def test_files(tmp_path):
    preflight.existing_file("--policy", None)
    with pytest.raises(preflight.MissingFile, match="--policy .*p.yaml: no such file"):
        preflight.existing_file("--policy", tmp_path / "p.yaml")
    with pytest.raises(preflight.MissingFile):
        preflight.existing_file("--policy", tmp_path)  # a folder is not a policy file
    preflight.existing_path("--path", tmp_path)
    with pytest.raises(preflight.MissingFile, match="no such file or folder"):
        preflight.existing_path("--path", tmp_path / "x")
    assert issubclass(preflight.MissingFile, ValueError)  # a usage error (exit 2)


def test_one_exit_code_table_shared_with_the_trainer():
    assert (exit_codes.OK, exit_codes.FAILED, exit_codes.USAGE) == (0, 1, 2)
    assert exit_codes.INTERRUPTED == interrupt.EXIT_INTERRUPTED == 75
    assert exit_codes.NONFINITE == interrupt.EXIT_NONFINITE == 3


def test_the_readme_documents_every_exit_code():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    documented = {int(c) for c in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == set(exit_codes.TABLE)


def test_steps_is_a_shorthand_for_a_last_set(tmp_path, cache):
    assert preflight.overrides(None, []) == {}
    assert preflight.overrides(None, [], steps=5) == {"train": {"steps": 5}}
    got = preflight.overrides(None, ["train.steps=3", "train.lr=0.001"], steps=5)
    assert got == {"train": {"steps": 5, "lr": 0.001}}
    with pytest.raises(preflight.MissingFile, match="--config .*none.yaml: no such file"):
        preflight.overrides(tmp_path / "none.yaml", [])
    cfg = preflight.resolved("dcgan", "smoke", got)
    assert cfg.train_cfg.steps == 5


# --- settings overrides checked against the catalog's schema, before the family loads ---------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(family_catalog.CACHE_ENV, str(tmp_path / "cache"))


def slow_and_fast(family, overrides: dict) -> tuple[str | None, str | None]:
    """What `settings.resolve` says of the overrides, and what `overrides_fit` says without
    loading the family (None: nothing)."""
    said = []
    for check in (
        lambda: settings.resolve(family, "p" if family.name == "odd" else "smoke", overrides),
        lambda: preflight.overrides_fit(family.name, overrides),
    ):
        try:
            check()
            said.append(None)
        except settings.SettingsError as e:
            said.append(str(e))
    return said[0], said[1]


BUILT_IN_CASES = [  # (family, overrides, decided without loading the family)
    ("dcgan", {"train": {"lr": -1}}, True),
    ("dcgan", {"train": {"lr": "fast"}}, True),
    ("dcgan", {"train": {"steps": 2.5}}, True),
    ("dcgan", {"train": {"steps": None}}, True),
    ("dcgan", {"train": {"steps": [1]}}, True),
    ("dcgan", {"train": {"bf16": "maybe"}}, True),
    ("dcgan", {"train": {"lr": -1, "steps": -3}}, True),  # both, in field order
    ("dcgan", {"model": {"dropout": 1}, "train": {"nosuch": 1, "x": 2}}, True),
    ("dcgan", {"model": {"g_width": 0}, "curation": {"image": {"min_confidence": 2}}}, True),
    ("charlstm", {"model": {"vocab": "abc", "hidden": 0}}, True),
    ("charlstm", {"curation": {"text": {"min_words": 9, "max_words": 3}}}, True),
    ("transformer", {"curation": {"text": {"pii": ["ssn"]}}}, True),
    ("dcgan", {"train": {"steps": "3"}}, False),  # pydantic's to say (strict here)
    ("dcgan", {"train": {"bf16": 1}}, False),
    ("dcgan", {"model": {"image_size": 30}}, False),  # a rule of the class: not in the schema
    ("transformer", {"model": {"n_embd": 30, "n_head": 4}}, False),
    ("vae", {"train": {"lr": 1e-3}, "model": {"width": 8}}, False),  # fine
]


@pytest.mark.parametrize("name, overrides, decided", BUILT_IN_CASES)
def test_overrides_fit_says_what_resolve_says_without_the_family(
    cache, monkeypatch, name, overrides, decided
):
    family = families.get(name)
    family_catalog.catalog()  # the cache, as the CLI's family check leaves it
    monkeypatch.setattr(families, "available", no_loading)
    slow, fast = slow_and_fast(family, overrides)
    assert (fast is not None) == decided, (slow, fast)
    if decided:
        assert fast == slow  # the same words: key path, what is wrong, what is allowed


def no_loading():
    raise AssertionError("the family registry was loaded")


@pydantic_dataclass(frozen=True, config=CONFIG)
class OddModel:
    """A plugin's model config with types the built-in ones do not use."""

    width: PositiveInt | None = None
    size: PositiveInt | Literal["auto"] = "auto"  # a union: pydantic explains each member
    kind: Literal["a", "b"] = "a"
    lax_count: int = Field(default=1, ge=1)  # not strict: pydantic reads "3" and True as ints
    flag: bool = False  # not strict: "yes" is True
    tags: set[int] = field(default_factory=set)  # duplicates in a list are fine
    when: datetime | None = None  # a number converts
    name: str = "x"
    vocab: DerivedStr = ""


@pydantic_dataclass(frozen=True, config=CONFIG)
class OddTrain:
    steps: PositiveInt = 1
    lr: PositiveFloat = 0.1


class OddFamily:
    name = "odd"
    presets = {"p": SimpleNamespace(model=OddModel(), train=OddTrain())}

    def preset(self, name: str):
        return self.presets[name]


ODD_CASES = [  # (overrides, decided without loading the family)
    ({"model": {"width": 0}}, True),
    ({"model": {"width": "wide"}}, True),
    ({"model": {"kind": "c"}}, True),
    ({"model": {"lax_count": 0}}, True),
    ({"model": {"lax_count": "many"}}, True),
    ({"model": {"flag": "maybe"}}, True),
    ({"model": {"flag": 2}}, True),  # a number, but neither 0 nor 1
    ({"model": {"tags": ["a"]}}, True),
    ({"model": {"vocab": "ab"}}, True),
    ({"model": {"nosuch": 1}, "train": {"steps": 0}}, True),
    ({"train": {"steps": 0, "lr": "fast"}}, True),
    ({"model": {"width": None, "kind": "b", "tags": [1, 1]}}, False),  # all fine
    ({"model": {"lax_count": "3", "flag": "yes"}}, False),  # pydantic converts them
    ({"model": {"lax_count": True}}, False),
    ({"model": {"when": 0}}, False),  # a date from a number
    ({"model": {"name": 3}}, False),  # text from a number, with coerce_numbers_to_str
    ({"model": {"size": "big"}}, False),
    ({"model": {"size": 0}}, False),
]


@pytest.mark.parametrize("overrides, decided", ODD_CASES)
def test_overrides_fit_never_refuses_what_pydantic_accepts(monkeypatch, overrides, decided):
    """Types pydantic may convert, optional fields, choices, sets: a problem is reported only
    when it is certain, in pydantic's words; anything else is left to settings.resolve."""
    entry = family_catalog._settings(OddFamily())
    monkeypatch.setattr(family_catalog, "settings_schema", lambda name: entry)
    slow, fast = slow_and_fast(OddFamily(), overrides)
    assert (fast is not None) == decided, (slow, fast)
    if decided:  # pydantic says more of a field that is not strict: "unable to parse..."
        assert len(fast.split("; ")) == len(slow.split("; ")), (fast, slow)
        for f, s in zip(fast.split("; "), slow.split("; "), strict=True):
            said, _, got = f.partition(" (got ")
            assert s.startswith(said) and s.endswith(got), (f, s)


def test_without_a_schema_resolve_decides(monkeypatch):
    monkeypatch.setattr(family_catalog, "settings_schema", lambda name: None)
    preflight.overrides_fit("dcgan", {"train": {"lr": -1}})  # nothing to check it against
    with pytest.raises(settings.SettingsError, match="train.lr: Input should be greater than 0"):
        preflight.resolved("dcgan", "smoke", {"train": {"lr": -1}})


# --- what `aigc generate` asks of the model, from the registry's tags and the catalog ---------


class TaggedRegistry:
    """A registry reader holding one tagged version: (name, version) -> tags."""

    def __init__(self, tags: dict):
        self.tags = tags

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return dict(self.tags.get((name, version), {}))


@pytest.fixture
def tagged(cache, monkeypatch, tmp_path):
    """A home whose registry `model_request` reads as `tags` says (set `tags` in the test); the
    catalog built, the family registry out of reach."""
    tags: dict = {}
    monkeypatch.setattr(rl, "open_registry", lambda home: TaggedRegistry({("m", 1): tags}))
    family_catalog.catalog()
    known = families.available()  # for the plan's own checks, which load the family
    monkeypatch.setattr(families, "available", no_loading)
    return SimpleNamespace(home=Home(tmp_path / "home"), tags=tags, families=known)


def request(tagged, tags: dict, labels=None, labels_file=None, **options) -> str | None:
    tagged.tags.clear()
    tagged.tags.update(tags)
    try:
        preflight.model_request(tagged.home, ("m", 1), labels, labels_file, options)
    except ValueError as e:
        return str(e)
    return None


def test_options_the_family_does_not_take_are_refused_in_the_plans_words(tagged):
    from aigc_core.content.plan import check_options

    dcgan = {"aigc.family": "dcgan", "aigc.num_classes": "0"}
    for options in (
        {"guidance": 2.0},
        {"sampling_steps": 4},
        {"guidance": 1.0, "sampling_steps": 3},
    ):
        said = request(tagged, dcgan, **options)
        with pytest.raises(ValueError) as plan:
            check_options(tagged.families["dcgan"], options, "model m version 1")
        assert said == str(plan.value), (said, plan.value)
    assert "takes no --guidance option (nor any other); drop --guidance" in request(
        tagged, dcgan, guidance=2.0, sampling_steps=None
    )
    diffusion = {"aigc.family": "diffusion", "aigc.num_classes": "10"}
    assert request(tagged, diffusion, guidance=2.0, sampling_steps=4) is None
    assert request(tagged, {"family": "dcgan"}, guidance=2.0) is not None  # the legacy tag
    # a text model takes neither labels nor image options
    said = request(tagged, {"aigc.family": "charlstm"}, labels="7", guidance=2.0)
    assert said == (
        "model m version 1 generates text, and class labels and image generation options "
        "(--labels, --guidance) apply to image models (labels to audio models too); drop them"
    )
    # an audio model takes labels (an unconditional one none) but no image generation option
    wavegan = {"aigc.family": "wavegan", "aigc.num_classes": "8"}
    assert request(tagged, wavegan, labels="3") is None
    assert "takes no --guidance option (nor any other); drop --guidance" in request(
        tagged, wavegan, guidance=2.0
    )
    unconditional = request(tagged, {"aigc.family": "wavegan", "aigc.num_classes": "0"}, "3")
    assert unconditional is not None and "unconditional" in unconditional


def test_labels_are_checked_against_the_versions_classes(tagged, tmp_path):
    from aigc_core.generation.labels import LabelsError, parse_labels

    def plan_says(spec, k):  # `plan.check_labels`, whose config says k classes
        with pytest.raises(LabelsError) as e:
            parse_labels(spec, k)
        return f"model m version 1: {e.value}"

    unconditional = {"aigc.family": "dcgan", "aigc.num_classes": "0"}
    assert request(tagged, unconditional, labels="7") == plan_says("7", 0)
    assert "asked of an unconditional model" in plan_says("7", 0)
    f = tmp_path / "labels.txt"
    f.write_text("# classes\n3\n12\n")
    conditional = {"aigc.family": "dcgan", "aigc.num_classes": "10"}
    assert request(tagged, conditional, labels_file=f) == plan_says("3,12", 10)
    assert "out of range" in request(tagged, conditional, labels="3:0.5,10:0.5")
    assert request(tagged, conditional, labels="3,9") is None
    assert request(tagged, {**conditional, "aigc.num_classes": "0"}, labels_file=f) is not None
    # the option is checked first, as the plan does
    assert "--guidance" in request(tagged, unconditional, labels="7", guidance=1.0)


def test_what_the_registry_does_not_say_is_left_to_the_plan(tagged, monkeypatch):
    for tags in (
        {"aigc.family": "dcgan"},  # registered before the num_classes tag
        {"aigc.num_classes": "0"},  # no family tag: the plan reads its saved config
        {"aigc.family": "nosuch", "aigc.num_classes": "0"},  # a plugin not installed here
        {},  # not a version the reader sees
    ):
        assert request(tagged, tags, labels="7") is None, tags
    assert request(tagged, {"aigc.family": "nosuch"}, guidance=1.0) is None
    unconditional = {"aigc.family": "dcgan", "aigc.num_classes": "0"}
    assert request(tagged, unconditional) is None  # nothing asked
    assert request(tagged, unconditional, guidance=None, sampling_steps=None) is None
    home = tagged.home
    preflight.model_request(home, None, "7", None, {})  # a store only MLflow reads
    monkeypatch.setattr(rl, "open_registry", lambda home: None)
    preflight.model_request(home, ("m", 1), "7", None, {"guidance": 1.0})


def test_the_rest_reader_reads_a_versions_tags(monkeypatch):
    reader = rl.RestRegistry("http://mlflow.invalid", {})
    answers = {
        ("m", "1"): {"model_version": {"tags": [{"key": "aigc.num_classes", "value": "10"}]}},
        ("m", "2"): {"model_version": {"name": "m", "version": "2"}},
    }
    seen = []

    def get(path, params):
        seen.append(path)
        return answers.get((params["name"], params["version"]))

    monkeypatch.setattr(reader, "_get", get)
    assert reader.version_tags("m", 1) == {"aigc.num_classes": "10"}
    assert reader.version_tags("m", 2) == {}
    assert reader.version_tags("m", 3) == {}  # 404: no such version
    assert seen == ["model-versions/get"] * 3


def test_registration_records_the_classes_the_plan_reads(tmp_path):
    import json

    from tasks.registry import num_classes

    image, text = families.get("dcgan"), families.get("charlstm")
    for config, expected in (({"num_classes": 10}, 10), ({"num_classes": 0}, 0), ({}, 0)):
        (tmp_path / "config.json").write_text(json.dumps({"family": "dcgan", **config}))
        assert num_classes(image, tmp_path) == expected
    assert num_classes(text, tmp_path) is None  # a text model takes no labels: no tag
