"""A logged model served from its own environment, as `mlflow models serve --env-manager
virtualenv` and `mlflow models build-docker` build it: a fresh virtualenv with nothing but the
model's `requirements.txt` installed (torch from the CPU pin first), this project absent. Every
family loads and predicts there, and `mlflow models serve` answers over HTTP."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aigc_core.serving.environment import PROJECT_DISTRIBUTION
from tests.integration.e2e.serving import invoke, model_server
from tests.integration.test_model_requirements import (
    LOAD_AND_PREDICT,
    ROOT,
    check_predictions,
    log_tiny_models,
    requests_of,
)

pytestmark = pytest.mark.slow


def run(*cmd, env: dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


@pytest.fixture(scope="module")
def model_env(tmp_path_factory):
    """Four logged tiny models, and a fresh virtualenv holding only what they require."""
    tmp = tmp_path_factory.mktemp("model-venv")
    models = log_tiny_models(tmp)
    requirements = [d / "requirements.txt" for d in models.values()]
    for r in requirements:
        assert PROJECT_DISTRIBUTION not in r.read_text(), r.read_text()
    [torch_pin] = {ln for r in requirements for ln in r.read_text().split() if ln[:7] == "torch=="}

    venv = tmp / "venv"
    bin_ = venv / "bin"
    env = {  # an environment of its own: no project on the path, no other virtualenv
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        and not k.startswith(("MLFLOW_", "AIGC_", "PREFECT_"))
    }
    env["PATH"] = f"{bin_}{os.pathsep}/usr/bin:/bin"
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    cwd = tmp / "elsewhere"  # outside the repository
    cwd.mkdir()
    p = run(sys.executable, "-m", "venv", venv, env=env, cwd=cwd)
    assert p.returncode == 0, p.stderr
    pip = [bin_ / "python", "-m", "pip", "install", "-q", "--no-compile"]  # .pyc: minutes
    p = run(*pip, torch_pin, env=env, cwd=cwd)  # the CPU build where the machine has it
    assert p.returncode == 0, p.stderr[-3000:]
    p = run(*pip, *(a for r in requirements for a in ("-r", r)), env=env, cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    return models, bin_, env, cwd


def test_the_venv_holds_the_requirements_and_not_the_project(model_env):
    models, bin_, env, cwd = model_env
    p = run(bin_ / "python", "-m", "pip", "list", "--format", "json", env=env, cwd=cwd)
    installed = {d["name"].lower(): d["version"] for d in json.loads(p.stdout)}
    assert PROJECT_DISTRIBUTION not in installed and "mlflow" not in installed  # skinny only
    for model_dir in models.values():
        for req in (model_dir / "requirements.txt").read_text().split():
            name, version = req.split("==")
            assert installed[name].split("+")[0] == version
    p = run(bin_ / "python", "-c", "import aigc_core", env=env, cwd=cwd)
    assert p.returncode != 0 and "No module named 'aigc_core'" in p.stderr


def test_every_family_loads_and_predicts_from_its_own_environment(model_env):
    models, bin_, env, cwd = model_env
    p = run(bin_ / "python", "-c", LOAD_AND_PREDICT, ROOT, requests_of(models), env=env, cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    check_predictions(json.loads(p.stdout.splitlines()[-1]), models)


def test_mlflow_models_serve_answers_from_the_model_environment(model_env):
    models, bin_, env, cwd = model_env
    with model_server(models["dcgan"], env, cwd, mlflow=[bin_ / "mlflow"]) as base:
        status, answer = invoke(
            base, {"dataframe_split": {"columns": ["n", "seed"], "data": [[3, 7]]}}
        )
    assert status == 200, answer
    rows = answer["predictions"]
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(r["png_base64"])))) for r in rows]
    assert len(images) == 3
    assert all(img.shape == (28, 28) and img.dtype == np.uint8 for img in images)
