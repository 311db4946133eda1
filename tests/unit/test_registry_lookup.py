"""The CLI's quick registry reader, its pure parts: model references resolved against a registry's
answers, the messages a user reads, which store a URI names, and what a REST request sends.
(Reading MLflow's own SQLite tables and REST API: tests/integration/test_registry_lookup.py.)"""

from __future__ import annotations

import base64

import pytest

from aigc import registry_lookup as rl
from aigc_core.names import InvalidName
from aigc_core.paths import Home


class FakeRegistry:
    """What a store holds, as the reader's protocol answers it."""

    def __init__(self, models: dict[str, rl.ModelInfo]):
        self.models = models

    def model_names(self) -> list[str]:
        return sorted(self.models)

    def model(self, name: str) -> rl.ModelInfo | None:
        return self.models.get(name)

    def list_models(self) -> list[dict]:
        raise AssertionError("not used here")


DIGITS = rl.ModelInfo("aigc-dcgan-digits", (1, 2, 3, 5), {"champion": 2, "challenger": 5})
REGISTRY = FakeRegistry({DIGITS.name: DIGITS, "text": rl.ModelInfo("text", (1,), {})})


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("aigc-dcgan-digits", ("aigc-dcgan-digits", 2)),  # a bare name: its champion
        ("aigc-dcgan-digits@challenger", ("aigc-dcgan-digits", 5)),
        ("aigc-dcgan-digits/3", ("aigc-dcgan-digits", 3)),
        (" aigc-dcgan-digits/1 ", ("aigc-dcgan-digits", 1)),
    ],
)
def test_resolve_ref_names_the_version(ref, expected):
    assert rl.resolve_ref(REGISTRY, ref) == expected


def test_an_unknown_model_lists_the_registered_ones_and_the_closest():
    with pytest.raises(rl.ModelRefError) as e:
        rl.resolve_ref(REGISTRY, "aigc-dcgan-digit")
    assert str(e.value) == (
        "no registered model 'aigc-dcgan-digit'; registered: aigc-dcgan-digits, text "
        "(see `aigc models`); did you mean 'aigc-dcgan-digits'?"
    )


def test_an_empty_registry_says_how_to_fill_it():
    with pytest.raises(rl.ModelRefError, match="holds no models yet .*`aigc run`"):
        rl.resolve_ref(FakeRegistry({}), "nosuch")


def test_a_long_list_of_models_is_cut():
    many = FakeRegistry({f"m{i:02d}": rl.ModelInfo(f"m{i:02d}") for i in range(30)})
    with pytest.raises(rl.ModelRefError) as e:
        rl.check_model(many, "zzz")
    assert "m19, ... and 10 more" in str(e.value) and "m20" not in str(e.value)


def test_a_missing_version_lists_the_versions_as_ranges():
    with pytest.raises(rl.ModelRefError) as e:
        rl.resolve_ref(REGISTRY, "aigc-dcgan-digits/4")
    assert str(e.value) == "model 'aigc-dcgan-digits' has no version 4; versions: 1-3, 5"
    with pytest.raises(rl.ModelRefError, match="has no version 7; versions: 1-3, 5"):
        rl.check_version(REGISTRY, "aigc-dcgan-digits", "7")
    assert rl.check_version(REGISTRY, "aigc-dcgan-digits", 5) is DIGITS


def test_a_missing_alias_lists_the_aliases_and_what_to_do():
    with pytest.raises(rl.ModelRefError) as e:
        rl.resolve_ref(REGISTRY, "text")
    msg = str(e.value)
    assert "model 'text' has no alias 'champion'; aliases: none; versions: 1" in msg
    assert "`aigc promote text VERSION`" in msg and "text/VERSION" in msg
    with pytest.raises(rl.ModelRefError, match=r"aliases: challenger \(v5\), champion \(v2\)"):
        rl.resolve_ref(REGISTRY, "aigc-dcgan-digits@prod")


def test_bad_names_are_refused_before_any_lookup():
    class Untouchable(FakeRegistry):
        def model(self, name):
            raise AssertionError("looked up an invalid name")

    for ref in ("a b", "x@1bad", "../etc", "m/v1"):
        with pytest.raises((InvalidName, ValueError)):
            rl.resolve_ref(Untouchable({}), ref)


@pytest.mark.parametrize(
    "versions, text",
    [([], ""), ([4], "4"), ([3, 1, 2], "1-3"), ([1, 2, 3, 5, 7, 8], "1-3, 5, 7-8"), ([2, 2], "2")],
)
def test_format_versions(versions, text):
    assert rl.format_versions(versions) == text


@pytest.mark.parametrize(
    "uri, ref",
    [
        ("models:/aigc-dcgan-digits@champion", "aigc-dcgan-digits@champion"),
        ("models:/m/3", "m/3"),
        ("models:/m/Production", None),  # a stage: MLflow's business
        ("runs:/abc/model", None),
        ("/some/folder", None),
    ],
)
def test_model_uri_ref(uri, ref):
    assert rl.model_uri_ref(uri) == ref


def test_which_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = Home(tmp_path)
    reader = rl.open_registry(home)
    assert isinstance(reader, rl.SqliteRegistry) and reader.path == home.mlflow_db
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/")
    reader = rl.open_registry(home)
    assert isinstance(reader, rl.RestRegistry) and reader.base == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://db/mlflow")
    assert rl.open_registry(home) is None  # only MLflow reads it


@pytest.mark.parametrize(
    "uri, path",
    [
        ("sqlite:////abs/mlflow.db", "/abs/mlflow.db"),
        ("sqlite:///rel.db", "rel.db"),
        ("sqlite:////a%20b/m.db?timeout=20", "/a b/m.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("http://x", None),
    ],
)
def test_sqlite_path(uri, path):
    got = rl.sqlite_path(uri)
    assert (str(got) if got else None) == path


def test_a_store_that_does_not_exist_holds_no_models(tmp_path):
    reader = rl.SqliteRegistry(tmp_path / "nothing.db")
    assert reader.model_names() == [] and reader.model("m") is None
    assert reader.list_models() == []
    assert not (tmp_path / "nothing.db").exists()  # read-only: nothing created


def test_rest_requests_carry_mlflows_credentials():
    basic = rl.RestRegistry(
        "http://h", {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p:w"}
    )
    auth = basic._headers()["Authorization"]
    assert auth.startswith("Basic ") and base64.b64decode(auth[6:]) == b"u:p:w"
    token = rl.RestRegistry("http://h", {"MLFLOW_TRACKING_TOKEN": "t0k"})
    assert token._headers()["Authorization"] == "Bearer t0k"
    assert "Authorization" not in rl.RestRegistry("http://h", {})._headers()


def test_an_unreachable_server_is_unavailable_not_missing():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = rl.RestRegistry(f"http://127.0.0.1:{port}", {})
    with pytest.raises(rl.RegistryUnavailable, match=f"cannot reach the MLflow server .*:{port}"):
        reader.model("m")
