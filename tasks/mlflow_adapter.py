"""The one MLflow adapter: tracking, model logging, the registry and aliases.

Nothing else in the project spells an MLflow call. Runs are addressed by id through
`MlflowClient`, so tasks can log into the same run from any thread.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aigc_core.paths import Home
from aigc_core.serving import pyfunc_file

log = logging.getLogger(__name__)

EXPERIMENT = "aigc-nightly"
CHAMPION, CHALLENGER = "champion", "challenger"


def _mlflow():
    import mlflow  # imported lazily: ~2 s, and only tasks that track need it

    return mlflow


def configure(home: Home) -> None:
    """Point MLflow at the home's SQLite store unless a tracking server is configured
    (MLFLOW_TRACKING_URI), and make sure the experiment exists."""
    mlflow = _mlflow()
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or home.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(EXPERIMENT) is None:
        location = None if uri.startswith("http") else home.mlflow_artifacts.as_uri()
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # created concurrently
            client.create_experiment(EXPERIMENT, artifact_location=location)


def client():
    return _mlflow().MlflowClient()


def start_run(run_name: str, tags: dict[str, str]) -> str:
    exp = client().get_experiment_by_name(EXPERIMENT)
    run = client().create_run(
        exp.experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()}
    )
    return run.info.run_id


@contextlib.contextmanager
def run_guard(run_id: str, finish: bool = False) -> Iterator[None]:
    """Mark the run FAILED if the body raises; FINISHED at the end when `finish`."""
    try:
        yield
    except BaseException:
        client().set_terminated(run_id, "FAILED")
        raise
    if finish:
        client().set_terminated(run_id, "FINISHED")


def log_params(run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    client().log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client().log_batch(
        run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    )


def log_artifact(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    client().log_artifact(run_id, str(path), artifact_path)


def log_image(run_id: str, image, name: str) -> None:
    """Log a PIL image as a PNG artifact."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        image.save(p)
        log_artifact(run_id, p)


def log_dataset(run_id: str, df: pd.DataFrame, name: str, source: str, digest: str) -> None:
    """Record the training snapshot as the run's input dataset."""
    mlflow = _mlflow()
    ds = mlflow.data.from_pandas(df, source=source, name=name, digest=digest)
    with mlflow.start_run(run_id=run_id, nested=False):
        mlflow.log_input(ds, context="training")
    client().update_run(run_id, status="RUNNING")


def log_model(
    run_id: str,
    family: str,
    artifacts: dict[str, Path],
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
) -> str:
    """Log a pyfunc model from code; returns its URI."""
    mlflow = _mlflow()
    from mlflow.models import infer_signature

    sig = infer_signature(input_example, output_example)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(pyfunc_file(family)),
            artifacts={k: str(v) for k, v in artifacts.items()},
            signature=sig,
            input_example=input_example,
            pip_requirements=_pip_requirements(),
        )
    client().update_run(run_id, status="RUNNING")
    return info.model_uri


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{p}=={version(p)}"
        for p in ("mlflow", "torch", "safetensors", "numpy", "pandas", "pillow")
    ] + ["aigc-pipeline"]


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    # register_model prints to stderr itself; the CLI owns the console, so say it in the log
    with contextlib.redirect_stderr(io.StringIO()):
        mv = _mlflow().register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    log.info("registered %s version %s", name, mv.version)
    return str(mv.version)


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    c = client()
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, str(v))


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]


def alias_version(name: str, alias: str) -> Version | None:
    """The version holding `alias`, or None (also when the model does not exist)."""
    mlflow = _mlflow()
    try:
        mv = client().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return Version(mv.name, str(mv.version), mv.run_id or "", dict(mv.tags or {}))


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(client().get_run(run_id).data.metrics)


def load_python_model(uri: str):
    """Load a pyfunc model by URI and return our PythonModel instance (with `.generate`)."""
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    return _mlflow().pyfunc.load_model(uri).unwrap_python_model()


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
