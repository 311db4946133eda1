"""`aigc compress` and `aigc run --compress` as a user runs them (real processes, a real MLflow
store): a smoke Transformer's champion compressed and registered with its lineage, compressed
once only, `champion-compressed` set within the tolerance, a compression that ruins the model
refused with its numbers and no alias moved, a batch generated from the compressed alias naming
the compressed version, and the compressed pyfunc loaded with unpickling disabled."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aigc_core.paths import Home
from aigc_core.promotion import read_audit
from tests.integration.e2e.test_cli import aigc
from tests.integration.e2e.test_cli_checks import aigc as quick
from tests.integration.e2e.test_cli_checks import cache, nothing_started, said

__all__ = ["cache"]  # the family catalog, built once (a fixture of test_cli_checks)

ROOT = Path(__file__).parents[3]
NAME = "aigc-transformer-python-docs"
COMPRESSED = "champion-compressed"

# `aigc` with the transformer family's compression replaced by one that ruins the model: the
# final LayerNorm scaled 1000-fold makes every prediction confidently wrong (a smoke champion
# scores ~6.2 bits per character, this ~410).
RUINED_AIGC = """
    import dataclasses

    import torch

    from aigc_core import compression, families
    from aigc_core.models.io import CONFIG, WEIGHTS, read_config, save_model


    def ruin(inputs):
        parent = inputs.parent_dir
        family = families.get("transformer")
        module = family.load_generator(parent / WEIGHTS, parent / CONFIG).model
        last = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)][-1]
        with torch.no_grad():
            last.weight.mul_(1000.0)
            last.bias.mul_(1000.0)
        save_model(inputs.out_dir, module.float(), read_config(parent / CONFIG))


    transformer = families.get("transformer")
    ruined = compression.Compression("ruin-test", transformer.compression.tolerance, ruin)
    families.available()["transformer"] = dataclasses.replace(transformer, compression=ruined)

    from aigc.cli import app

    app(prog_name="aigc")
"""


def ruined_aigc(*args: str, home: Path, tmp: Path) -> subprocess.CompletedProcess:
    script = tmp / "ruined_aigc.py"
    script.write_text(textwrap.dedent(RUINED_AIGC))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, str(script), *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )


def models(home: Path) -> dict:
    p = aigc("models", NAME, "--json", home=home, timeout=120)
    assert p.returncode == 0, p.stderr
    (model,) = json.loads(p.stdout)
    return model


def version_tags(model: dict, version: str) -> dict:
    return next(v["tags"] for v in model["versions"] if v["version"] == version)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A home whose smoke Transformer night compressed its champion (`aigc run --compress`),
    then `aigc compress` asked again with a generous tolerance: (home, the night's compression
    summary, the command's summary). (A Transformer: its smoke night takes a third of a
    DCGAN's here.)"""
    home = tmp_path_factory.mktemp("compress") / "home"
    args = ("run", "--preset", "smoke", "--model", "transformer", "--n", "8", "--compress")
    night = aigc(*args, "--json", home=home)
    assert night.returncode == 0, night.stderr
    summary = json.loads(night.stdout)
    assert summary["champion_version"] == "1" and summary["compression"] is not None
    # a generous tolerance: this test is about the stage's wiring, not about the method's
    # quality on a model trained for seconds (benchmarks/compress.py measures that)
    p = aigc("compress", "--model", f"{NAME}@champion", "--tolerance", "1", "--json", home=home)
    assert p.returncode == 0, p.stderr
    return home, summary["compression"], json.loads(p.stdout)


@pytest.mark.slow
def test_the_compressed_version_is_registered_with_its_lineage_and_gets_the_alias(compressed):
    home, first, s = compressed
    # the night compressed version 1 into version 2 and decided by the family's tolerance
    assert (first["parent_version"], first["version"], first["reused"]) == ("1", "2", False)
    assert first["decision"] in ("accepted", "refused") and first["tolerance"] > 0
    # `aigc compress` found it (nothing compressed twice) and, within its tolerance, gave it the
    # alias (or found it there)
    assert (s["parent_version"], s["version"], s["reused"]) == ("1", "2", True)
    expected = "unchanged" if first["decision"] == "accepted" else "accepted"
    assert s["decision"] == expected and s["alias_version"] == "2", s["reason"]
    assert s["metrics"] == first["metrics"] and s["parent_metrics"] == first["parent_metrics"]
    assert 0 < s["bytes"] < s["parent_bytes"] and s["size_ratio"] < 1
    assert s["metric"] == "bits_per_char" and s["value"] > 0 and s["parent_value"] > 0
    model = models(home)
    assert model["aliases"] == {"champion": "1", "challenger": "1", COMPRESSED: "2"}
    assert len(model["versions"]) == 2
    parent, tags = version_tags(model, "1"), version_tags(model, "2")
    assert tags["aigc.compressed_from"] == "1"
    assert tags["aigc.compression_method"] == s["method"]
    for key in ("aigc.family", "aigc.snapshot_id", "aigc.dataset", "aigc.preset"):
        assert tags[key] == parent[key], key  # what `aigc generate` and its preflight read
    assert "aigc.config_digest" not in tags  # never taken for the night's trained version
    assert float(tags["gate.bits_per_char"]) == pytest.approx(s["value"])
    assert tags["compression.decision"] == "accepted"
    audit = [r for r in read_audit(Home(home), NAME) if r["action"] == "compress"]
    assert [(r["version"], r["decision"]) for r in audit] == [
        ("2", first["decision"]), ("2", s["decision"])
    ]  # fmt: skip


@pytest.mark.slow
def test_a_compression_that_loses_too_much_quality_is_refused_and_no_alias_moves(
    compressed, tmp_path
):
    home, _, _ = compressed
    before = models(home)["aliases"]
    args = ("compress", "--model", f"{NAME}@champion", "--tolerance", "0.1")
    p = ruined_aigc(*args, home=home, tmp=tmp_path)
    assert p.returncode == 4, p.stderr  # exit_codes.REFUSED
    assert "Traceback" not in p.stderr
    text = " ".join(p.stdout.split())
    model = models(home)
    (ruined,) = [
        v for v in model["versions"] if v["tags"].get("aigc.compression_method") == "ruin-test"
    ]
    tags = ruined["tags"]
    assert tags["compression.decision"] == "refused"
    # the numbers: the parent's and the ruined copy's bits per character, in the table and in
    # the reason
    parent_bpc = float(version_tags(model, "1")["gate.bits_per_char"])
    bpc = float(tags["gate.bits_per_char"])
    assert bpc > 10 * parent_bpc
    assert f"{parent_bpc:.4g} (parent) -> {bpc:.4g}" in text, text
    assert "refused" in text and tags["compression.reason"] in text
    assert model["aliases"] == before  # champion and champion-compressed where they were
    assert ruined["aliases"] == []
    last = read_audit(Home(home), NAME)[-1]
    assert (last["action"], last["decision"], last["version"]) == (
        "compress",
        "refused",
        ruined["version"],
    )


@pytest.mark.slow
def test_generate_from_the_compressed_alias_names_the_compressed_version(compressed):
    home, _, s = compressed
    p = aigc("generate", "--model", f"{NAME}@{COMPRESSED}", "--n", "8", "--json", home=home)
    assert p.returncode == 0, p.stderr
    batch = json.loads(p.stdout)
    assert batch["model_version"] == s["version"] and batch["run_id"] == s["run_id"]
    manifest = json.loads((Path(batch["batch_dir"]) / "manifest.json").read_text())
    assert manifest["model_ref"] == f"{NAME}@{COMPRESSED}"
    table = pq.read_table(sorted(Path(batch["batch_dir"]).glob("*.parquet")))
    assert table.num_rows == 8
    assert set(table.column("model_version").to_pylist()) == {s["version"]}
    assert set(table.column("run_id").to_pylist()) == {s["run_id"]}


@pytest.mark.slow
def test_the_compressed_pyfunc_loads_and_predicts_with_unpickling_disabled(
    compressed, monkeypatch, mlflow_registry
):
    home, _, s = compressed

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    import cloudpickle
    import torch

    for module, attr in [(pickle, "load"), (pickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(module, attr, refuse)
    for attr in ("load", "loads"):
        monkeypatch.setattr(cloudpickle, attr, refuse)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    mlflow_registry(Home(home).tracking_uri)
    path = list(sys.path)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@{COMPRESSED}")
        out = model.predict(pd.DataFrame({"prompt": ["The ", "A "]}), {"max_new_tokens": 8})
    finally:
        sys.path[:] = path  # MLflow put the model's code folder first
    assert model.metadata.run_id == s["run_id"]
    assert len(out) == 2


def test_what_cannot_be_compressed_is_2_before_anything_starts(tmp_path, cache):
    """A version that is itself compressed, an unknown alias, a negative tolerance; a night
    asked to compress a family without a compression method."""
    home = Home(tmp_path / "home").ensure()
    c = mlflow.MlflowClient(tracking_uri=home.tracking_uri, registry_uri=home.tracking_uri)
    c.create_registered_model(NAME)
    tags = {"aigc.family": "transformer", "aigc.snapshot_id": "0123456789abcdef"}
    c.create_model_version(NAME, source=str(home.root / "m"), tags=tags)
    c.create_model_version(
        NAME, source=str(home.root / "m"), tags={**tags, "aigc.compressed_from": "1"}
    )
    c.set_registered_model_alias(NAME, COMPRESSED, "2")
    for args, message in (
        (["--model", f"{NAME}@{COMPRESSED}"], "version 2 is itself compressed (from version 1)"),
        (["--model", f"{NAME}@nosuch"], "has no alias 'nosuch'"),
        (["--model", NAME, "--tolerance", "-1"], "greater than or equal to 0"),
    ):
        p, _ = quick("compress", *args, home=home.root, cache=cache)
        assert p.returncode == 2 and message in said(p), p.stderr
        assert "Traceback" not in p.stderr
    # a night asked to compress a family that cannot be
    args = ("run", "--preset", "smoke", "--model", "diffusion", "--compress")
    p, _ = quick(*args, home=home.root, cache=cache)
    assert p.returncode == 2, p.stderr
    assert "--compress: the diffusion family has no compression method" in said(p), p.stderr
    assert nothing_started(home.root)
