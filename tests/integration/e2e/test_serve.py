"""The champion as users reach it: `aigc models/promote/rollback` in a real process, and
`mlflow models serve -m models:/NAME@champion` answering over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aigc_core.promotion import read_audit
from tasks.registry import promote_version
from tasks.tracking import Tracker
from tests.integration.e2e.serving import invoke, model_server
from tests.integration.test_registry import NAME, add_version, logged, store  # noqa: F401

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[3]


def clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))
    }
    # as in an activated virtualenv: the server runs `uvicorn` from the environment's bin/
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "PATH": path, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}


def aigc(*args: str, home: Path, timeout: int = 180, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aigc", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean_env(home), **env},
        cwd=ROOT,
    )


@pytest.fixture
def champion_home(logged):  # noqa: F811
    """A home with versions 1 (fid 20, champion), 2 (fid 35) and 3 (fid 9)."""
    home, trained = logged
    versions = [add_version(home, trained, f) for f in (20.0, 35.0, 9.0)]
    assert promote_version(home, NAME, versions[0]).promoted
    return home, versions


def test_served_champion_returns_samples_over_http(champion_home):
    home, _ = champion_home
    env = {**clean_env(home.root), "MLFLOW_TRACKING_URI": home.tracking_uri}
    with model_server(f"models:/{NAME}@champion", env, ROOT) as base:
        body = {"dataframe_split": {"columns": ["n", "seed"], "data": [[3, 7], [2, 8]]}}
        status, answer = invoke(base, body)
    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == 5 and [r["request"] for r in rows] == [0, 0, 0, 1, 1]
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(r["png_base64"])))) for r in rows]
    assert all(img.shape == (28, 28) and img.dtype == np.uint8 for img in images)
    # the same request gives the same samples as the registered model in-process
    model = Tracker(home).load_model(f"models:/{NAME}@champion")
    local = model.predict(None, pd.DataFrame({"n": [3], "seed": [7]}))
    assert [r["png_base64"] for r in rows[:3]] == local["png_base64"].tolist()


def test_registry_commands_promote_rollback_and_list(champion_home):
    home, (v1, v2, v3) = champion_home
    p = aigc("promote", NAME, v2, "--json", home=home.root)
    assert p.returncode == 1, p.stderr  # the gate refused: worse FID
    refused = json.loads(p.stdout)
    assert refused["decision"] == "rejected" and f"champion v{v1}" in refused["reason"]

    p = aigc("promote", NAME, v3, home=home.root)
    assert p.returncode == 0, p.stderr
    assert f"v{v3}: promoted" in p.stdout

    p = aigc("promote", NAME, v2, "--force", home=home.root)
    assert p.returncode == 2 and "--force needs --reason" in p.stderr

    p = aigc("rollback", NAME, "--reason", "smudgy digits", "--json", home=home.root)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {
        "model_name": NAME,
        "champion_version": v1,
        "previous_champion": v3,
    }

    p = aigc("models", "--json", home=home.root)
    assert p.returncode == 0, p.stderr
    [model] = json.loads(p.stdout)
    assert model["aliases"]["champion"] == v1
    tags = {v["version"]: v["tags"] for v in model["versions"]}
    assert tags[v3]["rollback.reason"] == "smudgy digits"
    assert tags[v2]["promotion.decision"] == "rejected"

    p = aigc("models", home=home.root, COLUMNS="200")  # the table for people
    assert p.returncode == 0 and "smudgy digits" in p.stdout and "champion" in p.stdout

    actions = [(r["action"], r["version"]) for r in read_audit(home, NAME)]
    assert actions == [("promote", v1), ("promote", v2), ("promote", v3), ("rollback", v1)]

    p = aigc("promote", NAME, "42", home=home.root)
    assert p.returncode == 2 and "has no version 42; versions: 1-3" in p.stderr
    assert "Traceback" not in p.stderr
