"""Shell completion callbacks, called as Typer calls them: the word being typed and the command
line parsed so far (`ctx.params`). (The shell's side: tests/integration/e2e/test_cli_checks.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from aigc import completion
from aigc import registry_lookup as rl
from aigc_core import families


class Registry:
    def __init__(self):
        self.models = {
            "aigc-dcgan-digits": rl.ModelInfo("aigc-dcgan-digits", (1, 2, 3), {"champion": 2}),
            "aigc-vae-digits": rl.ModelInfo("aigc-vae-digits", (1,), {"challenger": 1}),
        }

    def model_names(self):
        return sorted(self.models)

    def model(self, name):
        return self.models.get(name)


def ctx(**params) -> SimpleNamespace:
    return SimpleNamespace(params=params)


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """The completions' registry, and the home they were asked about."""
    asked = []

    def open_registry(home):
        asked.append(home.root)
        return Registry()

    monkeypatch.setattr(rl, "open_registry", open_registry)
    return asked


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_CACHE_DIR", str(tmp_path / "cache"))


def test_families_and_presets():
    assert completion.families("") == families.family_names()
    assert completion.families("c") == ["charlstm"]
    conditional = ["smoke-conditional", "cpu-conditional"]
    dcgan = ["smoke", "cpu", "gpu", "seed", *conditional, "cpu-augment"]
    assert completion.presets(ctx(family="dcgan"), "") == dcgan
    vae = ["smoke", "cpu", "gpu", *conditional, "cpu-augment"]
    assert completion.presets(ctx(model="vae"), "") == vae
    assert completion.presets(ctx(family="vae"), "s") == ["smoke", "smoke-conditional"]
    # an unknown family: the presets of all of them, each once
    assert completion.presets(ctx(family="nosuch"), "") == dcgan


def test_model_refs(registry, tmp_path):
    home = tmp_path / "h"
    assert completion.model_refs(ctx(home=home), "") == ["aigc-dcgan-digits", "aigc-vae-digits"]
    assert registry == [home.resolve()]  # the --home on the command line
    assert completion.model_refs(ctx(), "aigc-d") == ["aigc-dcgan-digits"]
    assert completion.model_refs(ctx(), "aigc-dcgan-digits@") == ["aigc-dcgan-digits@champion"]
    assert completion.model_refs(ctx(), "aigc-dcgan-digits/") == [
        "aigc-dcgan-digits/1",
        "aigc-dcgan-digits/2",
        "aigc-dcgan-digits/3",
    ]
    assert completion.model_refs(ctx(), "aigc-dcgan-digits/3") == ["aigc-dcgan-digits/3"]
    assert completion.model_refs(ctx(), "nosuch@") == []


def test_model_names_and_versions(registry):
    assert completion.model_names(ctx(), "aigc-v") == ["aigc-vae-digits"]
    assert completion.versions(ctx(model="aigc-dcgan-digits"), "") == ["3", "2", "1"]
    assert completion.versions(ctx(model="nosuch"), "") == []
    assert completion.versions(ctx(), "") == []  # no MODEL typed yet


def test_a_failing_source_gives_no_candidates(monkeypatch):
    def broken(home):
        raise rl.RegistryUnavailable("the server is down")

    monkeypatch.setattr(rl, "open_registry", broken)
    assert completion.model_refs(ctx(), "") == []
    assert completion.model_names(ctx(), "") == []
    monkeypatch.setattr(rl, "open_registry", lambda home: None)  # a store only MLflow reads
    assert completion.model_refs(ctx(), "a") == [] and completion.versions(ctx(model="m"), "") == []
