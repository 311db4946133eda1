"""`aigc generate` asks a model for what it does not take: a usage error (exit 2) before anything
starts, read from the registry's version tags and the family catalog, as a user meets it (a
real process each, a real MLflow store). The versions are registered the cheap way: tags as the
register stage writes them (`aigc.family`, `aigc.num_classes`), no model files, which the check
never reads."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from aigc import registry_lookup as rl
from aigc_core.paths import Home
from tests.integration.e2e.test_cli_checks import aigc, cache, nothing_started, said

__all__ = ["cache"]  # the family catalog, built once (a fixture of test_cli_checks)

VERSIONS = {  # model -> its champion's tags
    "aigc-dcgan-digits": {"aigc.family": "dcgan", "aigc.num_classes": "0"},
    "aigc-diffusion-digits": {"aigc.family": "diffusion", "aigc.num_classes": "0"},
    "aigc-vae-digits": {"aigc.family": "vae", "aigc.num_classes": "10"},
    "aigc-charlstm-python-docs": {"aigc.family": "charlstm"},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A fresh home whose registry holds a champion of each of `VERSIONS`."""
    h = Home(tmp_path_factory.mktemp("home")).ensure()
    c = mlflow.MlflowClient(tracking_uri=h.tracking_uri, registry_uri=h.tracking_uri)
    for name, tags in VERSIONS.items():
        c.create_registered_model(name)
        tags = {**tags, "aigc.snapshot_id": "0123456789abcdef"}
        c.create_model_version(name, source=str(h.root / "m"), tags=tags)
        c.set_registered_model_alias(name, "champion", "1")
    return h.root


def test_the_reader_gives_a_versions_tags(home):
    reader = rl.SqliteRegistry(Home(home).mlflow_db)
    assert reader.version_tags("aigc-vae-digits", 1)["aigc.num_classes"] == "10"
    assert reader.version_tags("aigc-vae-digits", 2) == {}


@pytest.mark.parametrize(
    "model, args, message",
    [
        (
            "aigc-dcgan-digits",
            ["--labels", "7"],
            "model aigc-dcgan-digits version 1: labels '7' asked of an unconditional model",
        ),
        (
            "aigc-dcgan-digits",
            ["--guidance", "2"],
            "model aigc-dcgan-digits version 1 is a dcgan model, which takes no --guidance "
            "option (nor any other); drop --guidance",
        ),
        ("aigc-dcgan-digits", ["--sampling-steps", "4"], "takes no --sampling-steps option"),
        ("aigc-diffusion-digits", ["--labels", "7"], "asked of an unconditional model"),
        ("aigc-vae-digits", ["--labels", "3,12"], "out of range"),
        ("aigc-vae-digits", ["--guidance", "1"], "is a vae model, which takes no --guidance"),
        ("aigc-charlstm-python-docs", ["--labels", "7"], "generates text, and class labels"),
    ],
)
def test_what_the_model_does_not_take_is_2_before_any_flow_run(home, cache, model, args, message):
    p, _ = aigc("generate", "--model", model, "--n", "1", *args, home=home, cache=cache)
    assert p.returncode == 2 and message in said(p), p.stderr
    assert "Traceback" not in p.stderr
    assert nothing_started(home)  # no Prefect server, so no flow run, Failed or other
