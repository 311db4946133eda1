"""The one MLflow adapter: tracking, model logging, the registry and aliases.

Nothing else in the project spells an MLflow call. Runs are addressed by id through
`MlflowClient`, so tasks can log into the same run from any thread.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from aigc_core import names
from aigc_core.paths import Home
from aigc_core.serving import pyfunc_file
from aigc_core.serving.environment import model_environment, stage_code

log = logging.getLogger(__name__)

EXPERIMENT = "aigc-nightly"
CHAMPION, CHALLENGER = "champion", "challenger"


def _mlflow():
    import mlflow  # imported lazily: ~2 s, and only tasks that track need it

    return mlflow


_URI_SET_BY_US: str | None = None


def configure(home: Home) -> None:
    """Point MLflow at the home's SQLite store unless a tracking server is configured
    (MLFLOW_TRACKING_URI), and make sure the experiment exists.

    `mlflow.set_tracking_uri` itself exports MLFLOW_TRACKING_URI, so a value equal to the one
    this function set last is ours, not the user's: the next home gets its own store."""
    global _URI_SET_BY_US
    mlflow = _mlflow()
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    env = os.environ.get("MLFLOW_TRACKING_URI")
    user_uri = env if env and env != _URI_SET_BY_US else None
    uri = user_uri or home.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _URI_SET_BY_US = None if user_uri else uri
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
    """Log a pyfunc model from code; returns its URI.

    The model carries what it needs to load where this project is not installed (`mlflow models
    serve` with a virtualenv, `mlflow models build-docker`): the project modules its file imports
    as code (`code/aigc_core/`) and pinned requirements for the third-party packages they import,
    never this project's distribution (see `aigc_core.serving.environment`)."""
    mlflow = _mlflow()
    from mlflow.models import infer_signature

    pyfunc = pyfunc_file(family)
    env = model_environment(pyfunc)
    sig = infer_signature(input_example, output_example)
    with tempfile.TemporaryDirectory() as staging, mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(pyfunc),
            artifacts={k: str(v) for k, v in artifacts.items()},
            code_paths=[str(stage_code(env.modules, Path(staging)))],
            signature=sig,
            input_example=input_example,
            pip_requirements=list(env.requirements),
        )
    client().update_run(run_id, status="RUNNING")
    return info.model_uri


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    # register_model prints to stderr itself; the CLI owns the console, so say it in the log
    with contextlib.redirect_stderr(io.StringIO()):
        mv = _mlflow().register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    log.info("registered %s version %s", name, mv.version)
    return str(mv.version)


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def delete_alias(name: str, alias: str) -> None:
    client().delete_registered_model_alias(name, alias)


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


def get_version(name: str, version: str) -> Version | None:
    """One version of a registered model, or None when either does not exist."""
    mlflow = _mlflow()
    try:
        mv = client().get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException:
        return None
    return Version(mv.name, str(mv.version), mv.run_id or "", dict(mv.tags or {}))


def _all_pages(search) -> list:
    """Every result of a paged MLflow search: `search(page_token)` returns one page."""
    items, token = [], None
    while True:
        page = search(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def list_models() -> list[dict]:
    """Every registered model with its aliases and versions (newest first), tags included.

    Versions come from one unfiltered search grouped by name: no filter string is built from a
    model's name, so a name MLflow's filter syntax cannot quote (e.g. one holding both quote
    characters, registered before names were checked) cannot break the listing of the others."""
    c = client()
    by_name: dict[str, list] = {}
    for mv in _all_pages(lambda t: c.search_model_versions(page_token=t)):
        by_name.setdefault(mv.name, []).append(mv)
    out = []
    models = _all_pages(lambda t: c.search_registered_models(page_token=t))
    for rm in sorted(models, key=lambda m: m.name):
        aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}  # alias -> version
        versions = by_name.get(rm.name, [])
        out.append(
            {
                "name": rm.name,
                "aliases": aliases,
                "versions": [
                    {
                        "version": str(mv.version),
                        "run_id": mv.run_id or "",
                        "tags": dict(mv.tags or {}),
                        "aliases": sorted(
                            a for a, v in aliases.items() if str(v) == str(mv.version)
                        ),
                    }
                    for mv in sorted(versions, key=lambda m: -int(m.version))
                ],
            }
        )
    return out


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(client().get_run(run_id).data.metrics)


def load_python_model(uri: str):
    """Load a pyfunc model by URI and return our PythonModel instance (with `.generate`).

    MLflow puts the model's `code/` folder first on `sys.path` for good. In this process the
    project's `aigc_core`, imported already, is the one used, so the path is put back rather than
    grow by a folder per load."""
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    path = list(sys.path)
    try:
        return _mlflow().pyfunc.load_model(uri).unwrap_python_model()
    finally:
        sys.path[:] = path


def download_model_files(uri: str, dst: Path) -> Path:
    """Download a logged pyfunc model's artifact files (weights and config) into `dst`; returns
    the folder that holds them. Nothing is unpickled."""
    local = Path(_mlflow().artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    return local / "artifacts"


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


def log_loss_curves(run_id: str, name: str = "loss_curves.png") -> list[str]:
    """Plot every metric of the run whose name contains "loss" against its step (matplotlib
    PNG artifact); returns the metrics plotted (none plotted: nothing logged)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    from matplotlib.figure import Figure

    c = client()
    keys = sorted(k for k in c.get_run(run_id).data.metrics if "loss" in k)
    if not keys:
        log.warning("run %s has no loss metrics to plot", run_id)
        return []
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    for k in keys:
        hist = sorted(c.get_metric_history(run_id, k), key=lambda m: (m.step, m.timestamp))
        ax.plot([m.step for m in hist], [m.value for m in hist], marker="o", ms=3, label=k)
    ax.set_xlabel("step (epoch)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        fig.savefig(p)
        log_artifact(run_id, p)
    return keys


# --- promotion: serialization and the audit log ---------------------------------------------
#
# MLflow's alias update is an unconditional overwrite, so compare-and-set needs a lock around
# "read champion, compare, set alias". This one is a file lock (flock) under the home, taken
# together with an in-process lock: it serializes threads and processes on ONE machine that share
# the home. It does not serialize promoters on different machines (or homes on NFS, where flock
# is unreliable); for that, promote through one process (the served-mode MLflow server's host)
# or replace this with a database-level lock on the tracking backend (e.g. a Postgres advisory
# lock). The registry module re-reads the alias after setting it to detect writers that bypass
# the lock.

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def registry_dir(home: Home) -> Path:
    return home.root / "registry"


def audit_log_path(home: Home) -> Path:
    return registry_dir(home) / "audit.jsonl"


@contextlib.contextmanager
def promotion_lock(home: Home, name: str, timeout: float = 120.0) -> Iterator[None]:
    """Hold the promotion lock of registered model `name` (threads and processes, one machine)."""
    from filelock import FileLock, Timeout

    path = names.inside(home.root, registry_dir(home) / "locks" / f"{names.model(name)}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCKS_GUARD:
        tlock = _THREAD_LOCKS.setdefault(str(path), threading.Lock())
    if not tlock.acquire(timeout=timeout):
        raise TimeoutError(f"promotion of {name!r}: another promotion held the lock {timeout:g} s")
    try:
        try:
            flock = FileLock(str(path), timeout=timeout)
            flock.acquire()
        except Timeout:
            raise TimeoutError(
                f"promotion of {name!r}: lock {path} held by another process for {timeout:g} s; "
                "if no promotion is running, the holder died: delete the lock file"
            ) from None
        try:
            yield
        finally:
            flock.release()
    finally:
        tlock.release()


def append_audit(home: Home, record: dict) -> dict:
    """Append one decision to the append-only JSONL audit log (one write, fsynced)."""
    record = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), **record}
    path = audit_log_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read_audit(home: Home, name: str | None = None) -> list[dict]:
    path = audit_log_path(home)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if name is None or r.get("model_name") == name]
