"""Names that are paths, globs or quotes (issue 13): refused where they enter, with exit 2 and
the rule, before Prefect or MLflow start, and nothing written outside the home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.e2e.test_cli import aigc


def files_outside(sandbox: Path, home: Path) -> list[str]:
    return sorted(
        p.relative_to(sandbox).as_posix()
        for p in sandbox.rglob("*")
        if p != home and home not in p.parents and p not in home.parents
    )


@pytest.fixture
def sandbox(tmp_path):
    """A home two folders down (so `../../x` stays inside tmp_path) and a good text dataset."""
    home = tmp_path / "a" / "b" / "home"
    src = tmp_path / "src" / "docs.txt"
    src.parent.mkdir(parents=True)
    src.write_text("".join(f"document number {n}, long enough to keep\n\n" for n in range(60)))
    return tmp_path, home, src


def refused(p, rule: str, name: str) -> None:
    err = " ".join(p.stderr.split())  # Rich wraps long lines
    assert p.returncode == 2, p.stderr
    assert p.stdout == "" and "Traceback" not in p.stderr
    assert name in err and rule in err, err


def test_ingest_dataset_dot_dot_writes_nothing_outside_the_home(sandbox):
    """`aigc ingest --dataset ../../etc --path GOOD` exited 0 with a snapshot outside the home."""
    tmp, home, src = sandbox
    before = files_outside(tmp, home)
    p = aigc("ingest", "--dataset", "../../x", "--path", str(src), home=home, timeout=120)
    refused(p, "a dataset name is 1-64 characters", "invalid dataset name '../../x'")
    assert files_outside(tmp, home) == before
    assert not (home / "datasets").exists()  # refused before the home was even opened


def test_ingest_absolute_dataset_writes_nothing_there(sandbox):
    tmp, home, src = sandbox
    target = tmp / "abs"
    p = aigc("ingest", "--dataset", str(target), "--path", str(src), home=home, timeout=120)
    refused(p, "a dataset name is 1-64 characters", f"invalid dataset name '{target}'")
    assert not target.exists()


def test_promote_dot_dot_model_creates_no_lock_file_outside_the_home(sandbox):
    """`aigc promote '../../../../x' 1` created a lock file outside the home."""
    tmp, home, _ = sandbox
    before = files_outside(tmp, home)
    p = aigc("promote", "../../../../x", "1", home=home, timeout=120)
    refused(p, "a model name is 1-128 characters", "invalid model name '../../../../x'")
    assert files_outside(tmp, home) == before
    assert not list(tmp.rglob("*.lock")) and not (home / "mlflow.db").exists()


@pytest.mark.parametrize(
    "args, rule, name",
    [
        (["rollback", "../x"], "a model name is", "'../x'"),
        (["models", "o'reilly"], "a model name is", '"o\'reilly"'),
        (["promote", "aigc-dcgan-digits", "../1"], "a version is a number", "'../1'"),
        (["generate", "--model", "../x@champion", "--n", "2"], "a model name is", "'../x'"),
        (["generate", "--model", "m@../x", "--n", "2"], "an alias is", "'../x'"),
        (["generate", "--model", "m/x*", "--n", "2"], "a version is a number", "'x*'"),
    ],
)
def test_registry_names_are_checked_before_mlflow_starts(sandbox, args, rule, name):
    tmp, home, _ = sandbox
    p = aigc(*args, home=home, timeout=120)
    refused(p, rule, name)
    assert not (home / "mlflow.db").exists()


def test_train_snapshot_glob_is_refused(sandbox):
    """`aigc train --snapshot '*'` trained on whatever a glob found first and recorded `*`."""
    tmp, home, _ = sandbox
    p = aigc("train", "--snapshot", "*", home=home, timeout=120)
    refused(p, "a snapshot id is 16 hexadecimal digits", "invalid snapshot id '*'")
    assert not (home / "mlflow.db").exists()


@pytest.mark.slow  # imports torch before the check: several seconds on 2 cores
def test_run_dataset_dot_dot_is_refused_before_prefect_starts(sandbox):
    tmp, home, _ = sandbox
    before = files_outside(tmp, home)
    p = aigc("run", "--dataset", "../../x", "--preset", "smoke", home=home, timeout=120)
    refused(p, "a dataset name is 1-64 characters", "invalid dataset name '../../x'")
    assert files_outside(tmp, home) == before and not (home / "mlflow.db").exists()


@pytest.mark.slow  # imports Prefect, MLflow and torch
def test_flows_refuse_bad_names_at_their_entry(tmp_path):
    """Deployments pass parameters straight to the flows: each checks its names first."""
    from aigc_core.names import InvalidName
    from flows.batch_generate import batch_generate
    from flows.ingest import ingest_dataset
    from flows.nightly import nightly_retrain

    home = str(tmp_path / "home")
    with pytest.raises(InvalidName, match="invalid dataset name '../../x'"):
        nightly_retrain.fn(dataset="../../x", home=home)
    with pytest.raises(InvalidName, match="invalid dataset name '/etc'"):
        ingest_dataset.fn(dataset="/etc", home=home)
    with pytest.raises(InvalidName, match="invalid model name"):
        batch_generate.fn(model="o'reilly@champion", n=1, home=home)
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
def test_models_lists_every_model_when_one_is_named_with_quotes(tmp_path):
    """A model named `o'reilly` (registered directly, before names were checked) made
    `aigc models` fail for every model: its filter string was pasted together from names."""
    import mlflow

    from aigc_core.paths import Home
    from tasks.tracking import Tracker

    home = Home(tmp_path / "home").ensure()
    Tracker(home)  # the home's store, created as the project creates it
    c = mlflow.MlflowClient(tracking_uri=home.tracking_uri, registry_uri=home.tracking_uri)
    for name in ("aigc-dcgan-digits", "o'reilly", "say\"cheese's"):
        c.create_registered_model(name)
        c.create_model_version(name, source=str(home.mlflow_artifacts / "none"))
    c.set_registered_model_alias("aigc-dcgan-digits", "champion", "1")

    p = aigc("models", "--json", home=home.root, timeout=300)
    assert p.returncode == 0, p.stderr
    listed = {m["name"]: m for m in json.loads(p.stdout)}
    assert set(listed) == {"aigc-dcgan-digits", "o'reilly", "say\"cheese's"}
    assert listed["aigc-dcgan-digits"]["versions"][0]["aliases"] == ["champion"]
    assert [v["version"] for v in listed["o'reilly"]["versions"]] == ["1"]

    p = aigc("models", "aigc-dcgan-digits", "--json", home=home.root, timeout=300)
    assert p.returncode == 0, p.stderr
    assert [m["name"] for m in json.loads(p.stdout)] == ["aigc-dcgan-digits"]
