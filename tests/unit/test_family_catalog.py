"""The family catalog: the registry's own description of each family, cached with a fingerprint
so that the CLI knows family names and presets without importing torch, and never serves a stale
one."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from aigc import family_catalog as fc
from aigc_core import families, settings


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(fc.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_catalog_is_what_the_registry_says(cache):
    expected = {n: json.loads(json.dumps(f.to_dict())) for n, f in families.available().items()}
    assert fc.catalog() == expected
    assert fc.family_names() == families.family_names()
    assert fc.preset_names("dcgan") == list(families.get("dcgan").presets)
    assert fc.preset_names("nosuch") == []
    assert fc.cache_file().parent == cache and fc.cache_file().exists()


def test_a_matching_fingerprint_reuses_the_file(cache, monkeypatch):
    first = fc.catalog()

    def no_loading():
        raise AssertionError("the registry was loaded again")

    monkeypatch.setattr(families, "available", no_loading)
    assert fc.catalog() == first
    assert fc.settings_schema("dcgan") is not None


def test_changed_code_rebuilds_it(cache, monkeypatch):
    fc.catalog()
    data = json.loads(fc.cache_file().read_text())
    data["families"][0]["presets"]["stale"] = {}  # what an older version of the code said
    fc.cache_file().write_text(json.dumps(data))
    assert "stale" in fc.preset_names(data["families"][0]["name"])  # same fingerprint: kept
    monkeypatch.setattr(fc, "FORMAT", fc.FORMAT + 1)  # as any change of a fingerprinted file
    assert "stale" not in fc.preset_names(data["families"][0]["name"])


def test_the_fingerprint_follows_the_files_of_aigc_core_and_of_plugins(tmp_path):
    pkg = tmp_path / "aigc_catalog_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("FAMILY = None\n")
    before = fc._module_stats("aigc_catalog_probe.sub")
    assert before == []  # not importable yet: nothing to follow
    sys.path.insert(0, str(tmp_path))
    try:
        stats = fc._module_stats("aigc_catalog_probe.sub")
        assert stats and "__init__.py" in json.dumps(stats)
        assert "aigc_catalog_probe" not in sys.modules  # found without running it
        (pkg / "__init__.py").write_text("FAMILY = 1  # changed\n")
        assert fc._module_stats("aigc_catalog_probe") != stats
    finally:
        sys.path.remove(str(tmp_path))
    core = fc._stats(Path(families.__file__).parents[1])
    assert any(p == "families/dcgan.py" for p, *_ in core)
    assert not any("__pycache__" in p for p, *_ in core)


def test_unknown_choices_list_the_known_ones(cache):
    with pytest.raises(fc.UnknownChoice) as e:
        fc.check_choice("gpt", "smoke")
    assert str(e.value).startswith("unknown model family 'gpt'; choose one of dcgan, vae")
    with pytest.raises(fc.UnknownChoice, match="unknown preset 'seed' for vae; choose one of"):
        fc.check_choice("vae", "seed")
    assert fc.check_choice("dcgan", "seed")["kind"] == "image"
    assert fc.check_choice("charlstm")["kind"] == "text"


def test_plugin_warnings_are_repeated_from_the_cache(cache, monkeypatch, caplog):
    def with_a_broken_plugin():
        families.log.warning("model family plugin %r (%s) failed to load: %s", "x", "x:F", "boom")
        return {}

    monkeypatch.setattr(families, "available", with_a_broken_plugin)
    with caplog.at_level("WARNING", logger=families.__name__):
        assert fc.catalog() == {}
        assert fc.catalog() == {}  # from the file, saying it again
    assert [r.getMessage() for r in caplog.records].count(
        "model family plugin 'x' (x:F) failed to load: boom"
    ) == 2


def test_an_unwritable_cache_still_answers(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(fc.CACHE_ENV, str(blocker / "cache"))  # under a file: cannot be made
    assert "dcgan" in fc.catalog()


def test_each_familys_settings_schema_is_cached_with_it(cache, monkeypatch):
    expected = {
        name: {
            "schema": json.loads(json.dumps(settings.json_schema(f))),
            "derived": {
                "model": sorted(settings.derived_fields(next(iter(f.presets.values())).model)),
                "train": sorted(settings.derived_fields(next(iter(f.presets.values())).train)),
            },
        }
        for name, f in families.available().items()
    }
    fc.catalog()
    monkeypatch.setattr(families, "available", no_loading)  # from the file from now on
    assert {name: fc.settings_schema(name) for name in expected} == expected
    assert fc.settings_schema("charlstm")["derived"] == {"model": ["vocab"], "train": []}
    assert fc.settings_schema("nosuch") is None
    assert "settings" not in json.dumps(fc.catalog())  # not in what `aigc families` prints


def no_loading():
    raise AssertionError("the registry was loaded again")


@dataclasses.dataclass
class PlainTrain:
    steps: int = 1


class NotAType:  # no dataclass, no pydantic model: no schema
    pass


def fake_family(*presets) -> SimpleNamespace:
    return SimpleNamespace(
        name="fake",
        presets={f"p{i}": SimpleNamespace(model=m, train=t) for i, (m, t) in enumerate(presets)},
    )


def test_no_settings_schema_where_one_cannot_describe_the_overrides():
    """settings.resolve then checks them (slow, but right)."""
    assert fc._settings(fake_family((PlainTrain(), PlainTrain()))) is not None
    mixed = fake_family((PlainTrain(), PlainTrain()), (NotAType(), PlainTrain()))
    assert fc._settings(mixed) is None  # two presets of different config classes
    assert fc._settings(fake_family((NotAType(), PlainTrain()))) is None


def test_each_familys_request_options_are_in_its_entry(cache, monkeypatch):
    """`aigc generate` checks --guidance and --sampling-steps against them, without torch."""
    expected = {n: list(f.params_example) for n, f in families.available().items()}
    assert expected["diffusion"] == ["labels", "guidance", "sampling_steps"]
    assert "guidance" not in expected["dcgan"]
    fc.catalog()
    monkeypatch.setattr(families, "available", no_loading)  # the cache answers from here
    assert {n: e["params"] for n, e in fc.catalog().items()} == expected
    assert fc.entry("diffusion") == fc.catalog()["diffusion"]
    assert fc.entry("nosuch") is None


def test_a_cache_from_before_the_params_is_rebuilt(cache, monkeypatch):
    """A cache file of format 2 has no `params`: its fingerprint no longer matches."""
    current = fc.FORMAT
    monkeypatch.setattr(fc, "FORMAT", 2)
    fc.catalog()
    data = json.loads(fc.cache_file().read_text())
    for entry in data["families"]:
        del entry["params"]  # what format 2 held
    fc.cache_file().write_text(json.dumps(data))
    assert "params" not in fc.entry("dcgan")
    monkeypatch.setattr(fc, "FORMAT", current)
    assert current > 2 and fc.entry("dcgan")["params"] == list(families.get("dcgan").params_example)
