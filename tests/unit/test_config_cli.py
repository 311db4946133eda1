"""`aigc config schema` and `aigc config show`, in-process (Typer's CliRunner; no home, no store,
no Prefect or MLflow)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aigc.cli import app
from aigc_core import families, settings

RUNNER = CliRunner()


def invoke(*args: str):
    return RUNNER.invoke(app, list(args), env={"COLUMNS": "200"})


def test_schema_prints_the_config_files_json_schema():
    plain = invoke("config", "schema")
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout) == settings.json_schema()
    vae = invoke("config", "schema", "--model", "vae")
    assert vae.exit_code == 0, vae.output
    schema = json.loads(vae.stdout)
    assert schema == settings.json_schema(families.get("vae"))
    assert "beta" in schema["$defs"]["VAEConfig"]["properties"]
    bad = invoke("config", "schema", "--model", "gpt9")
    assert bad.exit_code == 2 and "unknown model family 'gpt9'" in bad.output


def test_show_json_is_the_resolved_config_with_its_digest(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  width: 16\ntrain:\n  lr: 5e-4\n")
    r = invoke(
        "config", "show", "--model", "vae", "--preset", "smoke", "--config", str(f),
        "--set", "train.steps=3", "--set", "curation.image.min_confidence=0.5", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)  # stdout is exactly one JSON object
    resolved = settings.resolve(
        families.get("vae"), "smoke", settings.load_overrides(f, ["train.steps=3"])
    )
    assert got["digest"] == resolved.digest()
    assert (got["family"], got["preset"]) == ("vae", "smoke")
    assert got["model"]["width"] == 16 and got["train"]["lr"] == 5e-4
    assert got["train"]["steps"] == 3 and got["curation"]["image"]["min_confidence"] == 0.5


def test_show_table_marks_what_the_overrides_changed():
    r = invoke(
        "config", "show", "--model", "charlstm", "--preset", "smoke", "--set", "train.lr=0.01"
    )
    assert r.exit_code == 0, r.output
    lines = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if "│" in line}
    assert "override" in lines["train.lr"] and "0.01" in lines["train.lr"]
    assert "preset" in lines["train.steps"] and "default" in lines["curation.text.min_words"]
    assert "training data" in lines["model.vocab"]  # filled in by the family, not settable
    assert "curation.image.min_confidence" not in lines  # a text family: text curation only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.lrr=1"], "--set: train.lrr: unknown train setting of dcgan; allowed: "),
        (["--set", "train.lr=-1"], "--set: train.lr: Input should be greater than 0 (got -1)"),
        (["--set", "lr=1"], "KEY must be SECTION.NAME"),
        (["--config", "nope.yaml"], "cannot read config file nope.yaml"),
        (["--preset", "huge"], "unknown preset 'huge' for dcgan"),
    ],
)
def test_show_a_bad_setting_exits_2_naming_it(args, message):
    base = ["config", "show", "--model", "dcgan"]
    r = invoke(*base, *(["--preset", "smoke"] if "--preset" not in args else []), *args)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())  # Rich wraps long lines


def test_show_names_the_config_file_a_bad_value_came_from(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  z_dim: -3\n")
    r = invoke("config", "show", "--model", "dcgan", "--preset", "smoke", "--config", str(f))
    assert r.exit_code == 2, r.output
    assert f"{f}: model.z_dim: Input should be greater than or equal to 1 (got -3)" in " ".join(
        r.output.split()
    )
