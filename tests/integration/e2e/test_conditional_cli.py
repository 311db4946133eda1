"""Class-conditional image generation as a user runs it (issue 18): the diffusion family end to
end with `aigc run`, a batch asked for one class with diffusion's own options, its champion
through MLflow's pyfunc with params, and a conditional DCGAN whose batch asked for 7s is mostly
recognized as 7 by the snapshot's evaluator. Fresh homes, real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.e2e.test_cli import aigc

pytestmark = pytest.mark.slow


def batch_table(summary: dict) -> pd.DataFrame:
    parts = sorted(Path(summary["batch_dir"]).rglob("*.parquet"))
    assert parts, summary["batch_dir"]
    return pd.concat(pq.read_table(p).to_pandas() for p in parts)


@pytest.fixture(scope="module")
def diffusion_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("diffusion") / "home"
    p = aigc("run", "--preset", "smoke", "--model", "diffusion", "--n", "32", "--json", home=home)
    assert p.returncode == 0, p.stderr
    return home, json.loads(p.stdout)


def test_aigc_run_trains_promotes_and_curates_a_diffusion_batch(diffusion_home):
    _, summary = diffusion_home
    assert summary["model_name"] == "aigc-diffusion-digits"
    assert summary["model_version"] == "1" and summary["promoted"] is True
    assert summary["fid"] > summary["fid_floor"] > 0
    assert summary["n_generated"] == 32
    manifest = json.loads((Path(summary["batch_dir"]) / "manifest.json").read_text())
    assert manifest["n_generated"] == 32 and "labels" not in manifest  # none asked
    assert len(batch_table(summary)) == 32


def test_a_batch_asked_for_one_class_with_sampling_options(diffusion_home):
    home, _ = diffusion_home
    p = aigc(
        "generate", "--model", "aigc-diffusion-digits", "--n", "12", "--labels", "7",
        "--sampling-steps", "2", "--guidance", "1.5", "--json", home=home,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    manifest = json.loads((Path(summary["batch_dir"]) / "manifest.json").read_text())
    assert manifest["labels"]["requested"] == {"7": 12}
    assert manifest["options"] == {"guidance": 1.5, "sampling_steps": 2}
    table = batch_table(summary)
    assert table["requested_label"].tolist() == [7] * 12
    # a wrong class is a rejection with its reason, never a silent keep
    wrong = table["predicted_label"] != 7
    assert not table.loc[wrong, "kept"].any()
    assert table.loc[wrong, "reason"].str.contains("wrong_class").all()

    # a class the model does not know: a clear usage error, nothing made
    bad = aigc(
        "generate", "--model", "aigc-diffusion-digits", "--n", "4", "--labels", "12", home=home
    )
    assert bad.returncode == 2 and "out of range" in bad.stderr, bad.stderr


def test_the_diffusion_champion_takes_labels_guidance_and_steps_as_params(
    diffusion_home, mlflow_registry
):
    home, _ = diffusion_home
    import mlflow

    mlflow_registry(f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/aigc-diffusion-digits@champion")
    params = {spec.name: spec.default for spec in model.metadata.get_params_schema().params}
    assert params == {"labels": "", "guidance": -1.0, "sampling_steps": 0}
    request = pd.DataFrame({"n": [3], "seed": [5]})
    asked = model.predict(request, params={"labels": "3", "sampling_steps": 2, "guidance": 1.0})
    assert asked["label"].tolist() == [3, 3, 3] and asked["png_base64"].str.len().min() > 50
    again = model.predict(request, params={"labels": "3", "sampling_steps": 2, "guidance": 1.0})
    assert again["png_base64"].tolist() == asked["png_base64"].tolist()  # seeded
    other = model.predict(request, params={"labels": "3", "sampling_steps": 3, "guidance": 1.0})
    assert other["png_base64"].tolist() != asked["png_base64"].tolist()


def test_a_conditional_dcgan_batch_asked_for_7_is_mostly_recognized_as_7(tmp_path):
    home = tmp_path / "home"
    p = aigc(
        "run", "--preset", "cpu-conditional", "--model", "dcgan", "--set", "train.steps=300",
        "--n", "16", "--json", home=home, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    night = json.loads(p.stdout)
    assert night["metrics"]["label_accuracy"] > 0.7, night["metrics"]
    p = aigc(
        "generate", "--model", "aigc-dcgan-digits", "--n", "200", "--labels", "7", "--json",
        home=home,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    table = batch_table(json.loads(p.stdout))
    assert len(table) == 200 and set(table["requested_label"]) == {7}
    recognized = (table["predicted_label"] == 7).mean()
    assert recognized > 0.6, recognized  # mostly 7s (300 steps: ~0.95 measured)
