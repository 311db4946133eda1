"""The tracker: runs, metrics, artifacts, logged models and the registry, through MLflow.

The only project module that imports MLflow (besides `pyfunc_model.py`, which MLflow runs to
serve a model). Runs are addressed by id through one client, so tasks log into a run from any
thread. Registry answers are `aigc_core.stages.ModelVersion`: no MLflow type leaves this module.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from aigc_core import names
from aigc_core.paths import Home
from aigc_core.promotion import CHALLENGER, CHAMPION
from aigc_core.report import mlflow_ui_url
from aigc_core.serving.environment import model_environment, stage_code
from aigc_core.stages import ModelVersion

__all__ = ["CHALLENGER", "CHAMPION", "EXPERIMENT", "Tracker"]

log = logging.getLogger(__name__)

EXPERIMENT = "aigc-nightly"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")  # the one pyfunc: models from code

_URI_SET_BY_US: str | None = None


def _mlflow():
    import mlflow  # imported lazily: ~2 s, and only what tracks needs it

    return mlflow


def _version(mv) -> ModelVersion:
    return ModelVersion(mv.name, str(mv.version), mv.run_id or "", dict(mv.tags or {}))


def _quoted(name: str) -> str:
    """A model name inside a filter string's single quotes. Names are checked
    (`aigc_core.names`) to hold no quote; one that does anyway is refused, not escaped."""
    if "'" in name or "\\" in name:
        raise ValueError(f"model name {name!r} cannot be searched for")
    return name


def _all_pages(search) -> list:
    """Every result of a paged MLflow search: `search(page_token)` returns one page."""
    items, token = [], None
    while True:
        page = search(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


class Tracker:
    """Tracking and registry of one home's MLflow store (or of the tracking server the user
    configured with MLFLOW_TRACKING_URI)."""

    def __init__(self, home: Home):
        """Point MLflow at the home's SQLite store unless a tracking server is configured, and
        make sure the experiment exists. `mlflow.set_tracking_uri` itself exports
        MLFLOW_TRACKING_URI: a value equal to the one set here last is ours, not the user's."""
        global _URI_SET_BY_US
        mlflow = _mlflow()
        os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        env = os.environ.get("MLFLOW_TRACKING_URI")
        user_uri = env if env and env != _URI_SET_BY_US else None
        self.uri = user_uri or home.tracking_uri
        mlflow.set_tracking_uri(self.uri)  # the fluent API (log_model, register) uses these
        mlflow.set_registry_uri(self.uri)
        _URI_SET_BY_US = None if user_uri else self.uri
        self.home = home
        self._c = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        exp = self._c.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            location = None if self.uri.startswith("http") else home.mlflow_artifacts.as_uri()
            with contextlib.suppress(mlflow.exceptions.MlflowException):  # created concurrently
                self._c.create_experiment(EXPERIMENT, artifact_location=location)
            exp = self._c.get_experiment_by_name(EXPERIMENT)
        self.experiment_id = exp.experiment_id

    # --- runs -----------------------------------------------------------------------------

    def start_run(
        self, name: str, tags: Mapping[str, object], parent_run_id: str | None = None
    ) -> str:
        """A new run; nested under `parent_run_id` (the pipeline run) when given."""
        tags = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id  # how MLflow's UI nests runs
        run = self._c.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._c.set_terminated(run_id, status)

    def set_run_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        self._c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each metric of a run."""
        return dict(self._c.get_run(run_id).data.metrics)

    def log_table(self, run_id: str, df: pd.DataFrame, artifact_file: str) -> None:
        """A table artifact MLflow's UI shows as a table (and `mlflow.load_table` reads)."""
        self._c.log_table(run_id, data=df, artifact_file=artifact_file)

    def log_dict(self, run_id: str, data: Mapping, artifact_file: str) -> None:
        self._c.log_dict(run_id, dict(data), artifact_file)

    def ui_url(self) -> str | None:
        """The MLflow UI's address (no credentials) when tracking goes to a server, else None."""
        return mlflow_ui_url(self.uri) or None

    def run_page(self, run_id: str) -> str | None:
        """The run's page in MLflow's UI (None without a tracking server)."""
        base = self.ui_url()
        return None if base is None else f"{base}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def version_page(self, name: str, version: str) -> str | None:
        base = self.ui_url()
        return None if base is None else f"{base}/#/models/{quote(name)}/versions/{version}"

    @contextlib.contextmanager
    def run(self, run_id: str, finish: bool = False) -> Iterator[None]:
        """Mark the run FAILED if the body raises; FINISHED at the end when `finish`."""
        try:
            yield
        except BaseException:
            self._c.set_terminated(run_id, "FAILED")
            raise
        if finish:
            self._c.set_terminated(run_id, "FINISHED")

    def reopen(self, run_id: str) -> None:
        """Mark a run RUNNING again."""
        self._c.update_run(run_id, status="RUNNING")

    def close_if_running(self, run_id: str, status: str = "FAILED") -> None:
        """End a run left RUNNING (by a process that died); a run gone since is left alone."""
        try:
            if self._c.get_run(run_id).info.status == "RUNNING":
                self._c.set_terminated(run_id, status)
        except Exception as e:  # noqa: BLE001 - a run deleted since: nothing to close
            log.info("could not close run %s: %s", run_id, e)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._c.get_run(run_id).data.tags)

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        self._c.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._c.log_batch(run_id, metrics=batch)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._c.log_artifact(run_id, str(path), artifact_path)

    def log_image(self, run_id: str, image, name: str) -> None:
        """Log a PIL image as a PNG artifact called `name`."""
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            image.save(p)
            self.log_artifact(run_id, p)

    def log_dataset(
        self, run_id: str, df: pd.DataFrame, name: str, source: str, digest: str
    ) -> None:
        """Record a snapshot as the run's training input dataset."""
        mlflow = _mlflow()
        ds = mlflow.data.from_pandas(df, source=source, name=name, digest=digest)
        with mlflow.start_run(run_id=run_id, nested=False):
            mlflow.log_input(ds, context="training")
        self.reopen(run_id)

    def metric_history(
        self, run_id: str, contains: str = "loss"
    ) -> dict[str, list[tuple[int, float]]]:
        """Every logged value, as (step, value) in step order, of each metric of the run whose
        name contains `contains`."""
        keys = sorted(k for k in self._c.get_run(run_id).data.metrics if contains in k)
        out = {}
        for k in keys:
            hist = sorted(
                self._c.get_metric_history(run_id, k), key=lambda m: (m.step, m.timestamp)
            )
            out[k] = [(m.step, m.value) for m in hist]
        return out

    # --- models and the registry ------------------------------------------------------------

    def log_model(
        self,
        run_id: str,
        artifacts: Mapping[str, Path],
        input_example: pd.DataFrame,
        output_example: pd.DataFrame,
        params: Mapping[str, object] | None = None,
    ) -> str:
        """Log a pyfunc model from code (`pyfunc_model.py` over `artifacts`); returns its URI.

        It carries what it needs to load where this project is not installed (`mlflow models
        serve` in a virtualenv, `build-docker`): the project modules its file imports, as code,
        and pinned requirements of the packages they import (`aigc_core.serving.environment`).

        `params` (the family's `params_example`, name -> default) become the signature's params
        schema: without one MLflow drops a request's params. MLflow fills in the default of each
        param a request leaves out. Each is also an optional input column of any type, so a
        request that still gives it per row (the request shape before params) reaches the model,
        which checks it, instead of being dropped. An empty list has no item to infer a type
        from (MLflow would say datetime): it is typed as a list of strings."""
        mlflow = _mlflow()
        from mlflow.models import ModelSignature, infer_signature
        from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

        env = model_environment(PYFUNC_FILE)
        params = dict(params or {})
        typed = {k: [""] if isinstance(v, list) and not v else v for k, v in params.items()}
        sig = infer_signature(input_example, output_example, params=typed or None)
        if params:
            specs = [ParamSpec(p.name, p.dtype, params[p.name], p.shape) for p in sig.params]
            per_row = [
                ColSpec(AnyType(), k, required=False)
                for k in params
                if k not in input_example.columns
            ]
            inputs = Schema([*sig.inputs.inputs, *per_row])
            sig = ModelSignature(inputs, sig.outputs, ParamSchema(specs))
        with tempfile.TemporaryDirectory() as staging, mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_FILE),
                artifacts={k: str(v) for k, v in artifacts.items()},
                code_paths=[str(stage_code(env.modules, Path(staging)))],
                signature=sig,
                input_example=(input_example, params) if params else input_example,
                pip_requirements=list(env.requirements),
            )
        self.reopen(run_id)
        return info.model_uri

    def register(self, uri: str, name: str, tags: Mapping[str, object]) -> str:
        """Register the model at `uri` as a new version of `name`; returns the version."""
        # register_model prints to stderr itself; the CLI owns the console, so say it in the log
        with contextlib.redirect_stderr(io.StringIO()):
            mv = _mlflow().register_model(uri, name, tags={k: str(v) for k, v in tags.items()})
        log.info("registered %s version %s", name, mv.version)
        return str(mv.version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._c.set_registered_model_alias(name, alias, version)

    def tag_version(self, name: str, version: str, tags: Mapping[str, object]) -> None:
        for k, v in tags.items():
            self._c.set_model_version_tag(name, version, k, str(v))

    def describe_version(self, name: str, version: str, description: str) -> None:
        """The version's description, shown on its page in the registry."""
        self._c.update_model_version(name, version, description=description)

    def find_version(self, name: str, tags: Mapping[str, str]) -> ModelVersion | None:
        """The newest version of `name` whose tags hold all of `tags`, or None (also when the
        model does not exist). Matched here, not in a filter string built from values."""
        c = self._c
        try:
            found = _all_pages(
                lambda t: c.search_model_versions(f"name = '{_quoted(name)}'", page_token=t)
            )
        except _mlflow().exceptions.MlflowException:
            return None
        wanted = {k: str(v) for k, v in tags.items()}
        for mv in sorted(found, key=lambda m: -int(m.version)):
            if all((mv.tags or {}).get(k) == v for k, v in wanted.items()):
                return _version(mv)
        return None

    def alias_version(self, name: str, alias: str) -> ModelVersion | None:
        """The version holding `alias`, or None (also when the model does not exist)."""
        try:
            return _version(self._c.get_model_version_by_alias(name, alias))
        except _mlflow().exceptions.MlflowException:
            return None

    def get_version(self, name: str, version: str) -> ModelVersion | None:
        """One version of a registered model, or None when either does not exist."""
        try:
            return _version(self._c.get_model_version(name, str(version)))
        except _mlflow().exceptions.MlflowException:
            return None

    def resolve(self, ref: str) -> ModelVersion:
        """The version a reference names: NAME (its champion), NAME@ALIAS or NAME/VERSION;
        LookupError saying what to do when there is none."""
        name, alias, version = names.parse_model_ref(ref, default_alias=CHAMPION)
        if alias is not None:
            mv = self.alias_version(name, alias)
            if mv is None:
                raise LookupError(
                    f"registered model {name!r} has no {alias!r} alias: run the nightly pipeline "
                    f"first so a version can be promoted, or name a version as {name}/VERSION"
                )
            return mv
        mv = self.get_version(name, version)
        if mv is None:
            raise LookupError(
                f"registered model {name!r} has no version {version}: list its versions "
                f"with `aigc models`"
            )
        return mv

    def list_models(self) -> list[dict]:
        """Every registered model with its aliases and versions (newest first), tags included.

        Versions come from one unfiltered search grouped by name: no filter string is built from
        a model's name, so a name MLflow's filter syntax cannot quote (e.g. one holding both
        quote characters, registered before names were checked) cannot break the listing."""
        c = self._c
        by_name: dict[str, list] = {}
        for mv in _all_pages(lambda t: c.search_model_versions(page_token=t)):
            by_name.setdefault(mv.name, []).append(mv)
        out = []
        models = _all_pages(lambda t: c.search_registered_models(page_token=t))
        for rm in sorted(models, key=lambda m: m.name):
            aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}  # alias -> version
            versions = sorted(by_name.get(rm.name, []), key=lambda m: -int(m.version))
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
                                a for a, v in aliases.items() if v == str(mv.version)
                            ),
                        }
                        for mv in versions
                    ],
                }
            )
        return out

    def download_model(self, uri: str, dst: Path) -> Path:
        """Download a logged pyfunc model's files into `dst`; returns the folder holding its
        weights and config (`weights.safetensors`, `config.json`). Nothing is unpickled."""
        local = _mlflow().artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst), tracking_uri=self.uri, registry_uri=self.uri
        )
        return Path(local) / "artifacts"

    def load_model(self, uri: str):
        """Load a logged model as MLflow serves it, never unpickling; returns the pyfunc's
        Python model (its core generator is `.generator`).

        MLflow puts the model's `code/` folder first on `sys.path` for good; here the project's
        `aigc_core`, imported already, is the one used, so the path is put back."""
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
        path = list(sys.path)
        try:
            return _mlflow().pyfunc.load_model(uri).unwrap_python_model()
        finally:
            sys.path[:] = path
