"""The nightly flow end to end on the smoke preset, in embedded mode."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aigc_core.data import sources
from aigc_core.data.files import DataSourceError
from aigc_core.images import decode_png
from data_contracts import ContractViolation
from flows.nightly import nightly_retrain
from tests.conftest import tiny_images

pytestmark = pytest.mark.slow


def client_for(home) -> mlflow.MlflowClient:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Three nights in one home: the first, the same again (nothing changed), and a forced one."""
    home = tmp_path_factory.mktemp("nightly")
    first = nightly_retrain(preset="smoke", n_generate=40, home=str(home))
    repeat = nightly_retrain(preset="smoke", n_generate=40, home=str(home))
    forced = nightly_retrain(preset="smoke", n_generate=40, home=str(home), force=True)
    return home, first, repeat, forced


@pytest.fixture(scope="module")
def two_runs(nights):
    home, first, _, forced = nights
    return home, first, forced


def test_an_unchanged_night_trains_nothing_and_reports_the_version_it_has(nights):
    home, first, repeat, _ = nights
    assert first["trained"] is True
    assert repeat["trained"] is False and repeat["model_version"] == "1"
    assert repeat["run_id"] == first["run_id"] and not repeat["promoted"]
    assert repeat["promotion_reason"].startswith("unchanged: version 1")
    assert repeat["fid"] == pytest.approx(first["fid"])
    assert repeat["n_generated"] == 40  # the night's content is still made, from the champion
    client = client_for(home)
    # two trainings in three nights: the first and the forced one
    trains = client.search_runs(
        [client.get_experiment_by_name("aigc-nightly").experiment_id],
        "tags.`aigc.stage` = 'train'",
    )
    assert len(trains) == 2


def test_a_night_is_one_mlflow_parent_run_with_nested_stage_runs(nights):
    home, first, repeat, _ = nights
    client = client_for(home)
    exp = client.get_experiment_by_name("aigc-nightly").experiment_id
    parent = client.get_run(first["pipeline_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["aigc.stage"] == "pipeline"
    assert parent.info.run_name.startswith("nightly-dcgan-digits-")
    assert parent.data.tags["aigc.trained"] == "true"
    assert f"trained {first['model_name']} version 1" in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["fid"] == pytest.approx(first["fid"])
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    stages = sorted(r.data.tags["aigc.stage"] for r in children)
    assert stages == ["content-batch", "data-contract", "train"]
    assert first["run_id"] in {r.info.run_id for r in children}
    # one tag scheme: every tag the project sets on a run is aigc.<key> (mlflow.* are MLflow's)
    for run in [parent, *children]:
        ours = {k for k in run.data.tags if not k.startswith("mlflow.")}
        assert ours and all(k.startswith("aigc.") for k in ours), ours
    # the resolved settings are logged with the training run
    train = client.get_run(first["run_id"])
    assert train.data.tags["aigc.config_digest"] and train.data.params["train.steps"]
    local = client.download_artifacts(first["run_id"], "resolved_config.json")
    resolved = json.loads(Path(local).read_text())
    assert {"model", "train", "curation"} <= set(resolved)
    assert client.get_run(repeat["pipeline_run_id"]).data.tags["aigc.trained"] == "false"


def test_a_registered_version_describes_its_data_metrics_and_gate_decision(nights):
    home, first, _, _ = nights
    v1 = client_for(home).get_model_version(first["model_name"], "1")
    assert first["snapshot_id"] in v1.description and "digits" in v1.description
    assert "fid" in v1.description and v1.description.startswith("Gate: promoted")
    assert v1.tags["aigc.snapshot_id"] == first["snapshot_id"]
    assert v1.tags["aigc.config_digest"] and v1.tags["aigc.code_digest"]


def test_the_flow_run_is_named_tagged_and_links_to_mlflow_and_the_report(nights):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, LogFilter
    from prefect.logging.handlers import APILogHandler

    home, first, _, _ = nights
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        tagged = FlowRunFilter(tags={"all_": ["family:dcgan"]})
        runs = [
            r
            for r in client.read_flow_runs(flow_run_filter=tagged)
            if r.parameters.get("home") == str(home) and r.name.startswith("nightly-")
        ]
        assert len(runs) == 3
        run = runs[0]
        assert run.name.startswith("nightly-dcgan-digits-20")
        assert {"family:dcgan", "dataset:digits", "preset:smoke"} <= set(run.tags)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id={"any_": [run.id]})
        )
        keys = {a.key for a in artifacts}
        assert {"review-report", "mlflow-runs"} <= keys  # local store: a note, no UI links
        report = next(a for a in artifacts if a.key == "review-report")
        assert "report.html" in str(report.data)
        # the project's own log lines reach the flow run's log in Prefect
        logs = client.read_logs(LogFilter(flow_run_id={"any_": [run.id]}))
        names = {entry.name for entry in logs}
        assert any(n.startswith(("tasks.", "aigc_core.")) for n in names), names


def test_first_run_promotes_version_1_and_writes_a_batch(two_runs):
    home, first, _ = two_runs
    assert first["model_version"] == "1" and first["promoted"]
    assert first["champion_version"] == "1"
    assert np.isfinite(first["fid"]) and first["fid_floor"] < first["fid"]
    batch = home / "content" / first["batch_id"]
    manifest = json.loads((batch / "manifest.json").read_text())
    table = pq.read_table(batch / manifest["files"][0]["path"]).to_pandas()
    assert len(table) == manifest["n_generated"] == 40
    assert int(table["kept"].sum()) == manifest["n_kept"] == first["n_kept"]
    assert (table.loc[~table["kept"], "reason"] != "").all()
    assert (table.loc[table["kept"], "reason"] == "").all()
    # lineage: every item names the model version, run and snapshot it came from
    assert set(table["model_version"]) == {"1"}
    assert set(table["run_id"]) == {first["run_id"]}
    assert set(table["snapshot_id"]) == {first["snapshot_id"]}
    assert decode_png(table["png"].iloc[0]).shape == (28, 28)
    assert (batch / "contact_sheet.png").stat().st_size > 0


def test_second_run_reuses_the_snapshot_and_records_a_decision(two_runs):
    home, first, second = two_runs
    assert second["snapshot_id"] == first["snapshot_id"] and not second["snapshot_created"]
    assert second["model_version"] == "2"
    client = client_for(home)
    v2 = client.get_model_version(second["model_name"], "2")
    assert v2.tags["promotion.decision"] in ("promoted", "rejected")
    assert v2.tags["promotion.reason"] == second["promotion_reason"]
    assert v2.tags["promotion.previous_champion"] == "1"
    assert v2.tags["aigc.snapshot_id"] == first["snapshot_id"]
    assert float(v2.tags["gate.fid"]) == pytest.approx(second["fid"])
    champion = client.get_model_version_by_alias(second["model_name"], "champion")
    assert str(champion.version) == second["champion_version"]
    challenger = client.get_model_version_by_alias(second["model_name"], "challenger")
    assert str(challenger.version) == "2"


def test_the_champion_loads_without_unpickling_and_generates(
    two_runs, monkeypatch, mlflow_registry
):
    home, first, _ = two_runs
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    mlflow_registry(f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{first['model_name']}@champion")
    out = model.predict(pd.DataFrame({"n": [3, 2], "seed": [7, 8]}))
    assert len(out) == 5 and set(out["request"]) == {0, 1}
    again = model.predict(pd.DataFrame({"n": [3], "seed": [7]}))
    assert again["png_base64"].tolist() == out["png_base64"][:3].tolist()  # seeded


def test_a_corrupted_dataset_stops_at_validate_and_registers_nothing(tmp_path, monkeypatch):
    def corrupted(**_):
        data = tiny_images(n=60)
        data.pixels[5, 0, 3, 3] = np.nan  # NaN pixels
        data.pixels[9, 0, 0, 0] = 4.0  # out of range
        return data

    monkeypatch.setitem(sources.IMAGE_SOURCES, "corrupted", corrupted)
    # uint8 snapshots cannot hold them: ingest refuses them while building the table
    with pytest.raises(DataSourceError) as e:
        nightly_retrain(dataset="corrupted", preset="smoke", home=str(tmp_path))
    assert "NaN or infinite pixels" in str(e.value) and "outside [0, 1]" in str(e.value)
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())
    assert client_for(tmp_path).search_registered_models() == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path / "content").exists() or not any((tmp_path / "content").iterdir())


def test_a_dataset_breaking_its_contract_stops_at_the_gate_and_registers_nothing(
    tmp_path, monkeypatch
):
    def mislabelled(**_):
        data = tiny_images(n=60)
        data.labels[:3] = 42  # labels outside the declared set
        return data

    monkeypatch.setitem(sources.IMAGE_SOURCES, "mislabelled", mislabelled)
    with pytest.raises(ContractViolation) as e:
        nightly_retrain(dataset="mislabelled", preset="smoke", home=str(tmp_path))
    assert "labels out of range" in str(e.value) and "3 rows unexpected" in str(e.value)
    assert not any((tmp_path / "datasets").glob("*/*"))  # no snapshot was published
    assert client_for(tmp_path).search_registered_models() == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
