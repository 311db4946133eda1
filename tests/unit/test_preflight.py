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
