"""A compressed model is logged and served as any other: its pyfunc loads and predicts where this
project cannot be imported, from the code it carries, with pickle deserialization off, and its
int8 layers are rebuilt there (issue 17: "the compressed pyfunc loads without pickle")."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pandas as pd

from aigc_core import families
from aigc_core.compression import CompressInputs, compress
from aigc_core.compression.pruning import dcgan_channels
from aigc_core.models.io import save_model
from aigc_core.paths import Home
from aigc_core.serving.environment import model_environment
from tasks.tracking import Tracker
from tests.integration.test_model_requirements import (
    LOAD_AND_PREDICT,
    PYFUNC,
    ROOT,
    check_predictions,
    requests_of,
    tiny,
)

# After LOAD_AND_PREDICT: which modules the served text model runs as int8 kernels.
INT8_PROBE = r"""
import sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1]).unwrap_python_model()
print(sorted({type(m).__module__ for m in model.generator.module.modules()}))
"""


def compressible(name: str):
    """The family; the DCGAN's pruning with 5 distillation steps instead of 300, for speed."""
    family = families.get(name)
    if name == "dcgan":
        family = dataclasses.replace(
            family, compression=dcgan_channels(family.load_generator, 0.1, steps=5)
        )
    return family


def test_compressed_models_load_and_predict_without_the_project_or_pickle(tmp_path):
    home = Home(tmp_path / "aigc-home").ensure()
    tracker = Tracker(home)
    models = {}
    for name in ("charlstm", "transformer", "dcgan"):
        family = compressible(name)
        module, config, request = tiny(name)
        save_model(tmp_path / name / "parent", module, config)
        out = compress(
            family, CompressInputs(tmp_path / name / "parent", tmp_path / name / "c", None, {})
        )
        run_id = tracker.start_run(f"compressed-{name}", tags={})
        artifacts = {
            "weights": out.out_dir / "weights.safetensors",
            "config": out.out_dir / "config.json",
        }
        example = pd.DataFrame(request)
        served = family.load_generator(artifacts["weights"], artifacts["config"])
        uri = tracker.log_model(
            run_id, artifacts, example, served.predict(example), family.params_example
        )
        models[name] = tracker.download_model(uri, tmp_path / "models" / name).parent
        saved = json.loads((models[name] / "artifacts" / "config.json").read_text())
        assert saved["compression"]["method"] == family.compression.method

    env = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "PATH": "/usr/bin:/bin"}
    p = subprocess.run(
        [sys.executable, "-I", "-c", LOAD_AND_PREDICT, str(ROOT), requests_of(models)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    check_predictions(json.loads(p.stdout.splitlines()[-1]), models)
    shipped = set(model_environment(PYFUNC).modules)
    assert {"aigc_core.compression", "aigc_core.compression.int8"} <= shipped

    p = subprocess.run(
        [sys.executable, "-c", INT8_PROBE, str(models["charlstm"])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "torch.ao.nn.quantized.dynamic.modules.rnn" in p.stdout, p.stdout
