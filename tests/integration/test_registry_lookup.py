"""The CLI's quick registry reader against what MLflow itself writes: the home's SQLite store read
with sqlite3 gives what MLflow's client gives (`Tracker.list_models`), deleted versions and other
workspaces left out; a tracking server's REST API gives the same again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from aigc import registry_lookup as rl
from aigc_core.paths import Home


def fill_registry(home: Home) -> None:
    """Two models as the pipeline leaves them: versions with tags, aliases, a deleted version."""
    c = mlflow.MlflowClient(tracking_uri=home.tracking_uri, registry_uri=home.tracking_uri)
    for name in ("aigc-dcgan-digits", "aigc-charlstm-python-docs"):
        c.create_registered_model(name)
        for i in range(1, 4):
            tags = {"aigc.family": name.split("-")[1], "gate.fid": str(10.0 / i)}
            c.create_model_version(name, source=str(home.root / "m"), tags=tags)
    c.set_registered_model_alias("aigc-dcgan-digits", "champion", "2")
    c.set_registered_model_alias("aigc-dcgan-digits", "challenger", "3")
    c.set_model_version_tag("aigc-dcgan-digits", "2", "promotion.decision", "promoted")
    c.delete_model_version("aigc-charlstm-python-docs", "2")
    c.create_registered_model("empty")


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> Home:
    home = Home(tmp_path_factory.mktemp("registry")).ensure()
    fill_registry(home)
    return home


def test_sqlite_reader_matches_mlflows_client(filled):
    from tasks.tracking import Tracker

    reader = rl.SqliteRegistry(filled.mlflow_db)
    assert reader.list_models() == Tracker(filled).list_models()
    assert reader.model_names() == ["aigc-charlstm-python-docs", "aigc-dcgan-digits", "empty"]
    docs = reader.model("aigc-charlstm-python-docs")
    assert docs.versions == (1, 3) and docs.aliases == {}  # version 2 was deleted
    assert reader.model("aigc-dcgan-digits").aliases == {"champion": 2, "challenger": 3}
    assert reader.model("empty") == rl.ModelInfo("empty", (), {})
    assert reader.model("AIGC-DCGAN-DIGITS") is None  # names are case-sensitive, as in MLflow
    assert rl.resolve_ref(reader, "aigc-dcgan-digits") == ("aigc-dcgan-digits", 2)


def test_other_workspaces_are_not_this_registry(filled, tmp_path):
    """MLflow's SQLAlchemy store reads the default workspace only; so does the reader."""
    import shutil
    import sqlite3

    db = tmp_path / "copy.db"
    shutil.copy(filled.mlflow_db, db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE registered_models SET workspace = 'team-b' WHERE name = 'empty'")
    assert "empty" not in rl.SqliteRegistry(db).model_names()


def test_a_file_that_is_no_store_is_unavailable(tmp_path):
    bad = tmp_path / "mlflow.db"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(rl.RegistryUnavailable, match="cannot read the MLflow store"):
        rl.SqliteRegistry(bad).model("m")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_rest_reader_matches_the_sqlite_reader(filled, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", filled.tracking_uri, "--workers", "1"]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, Path(tmp_path / "server.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        rest = rl.RestRegistry(f"http://127.0.0.1:{port}", {})
        local = rl.SqliteRegistry(filled.mlflow_db)
        assert rest.list_models() == local.list_models()
        assert rest.model_names() == local.model_names()
        for name in (*local.model_names(), "nosuch"):
            assert rest.model(name) == local.model(name)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
