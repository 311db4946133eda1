"""A quick, read-only look at the model registry for the CLI: which models exist, their versions,
aliases and version tags, without importing MLflow or starting anything.

`aigc generate --model nosuch` used to start the embedded Prefect server and a flow run that then
failed inside MLflow's client, ~39 s later, saying the model had no champion; importing MLflow
alone takes ~4.4 s here. The registry answers in milliseconds when read directly, so every
command that takes a model reference asks it first (`resolve_ref`, `check_model`,
`check_version`) and a wrong one is a usage error before anything starts; a version's tags
(`version_tags`: its family, its classes) let `aigc generate` check that the model takes the
options asked of it. It is read the way
MLflow keeps it:

- a SQLite store (the home's `sqlite:///<home>/mlflow.db`, or any `sqlite:///` tracking URI):
  MLflow's own tables (`registered_models`, `model_versions`, `registered_model_aliases`,
  `model_version_tags`, as `mlflow/store/model_registry/dbmodels/models.py` defines them) through
  `sqlite3` in read-only mode, with the filters MLflow's SQLAlchemy store applies: the default
  workspace only, deleted versions (stage `Deleted_Internal`) left out. A store that does not
  exist yet, or has no registry tables yet, holds no models.
- a tracking server (an `http(s)://` MLFLOW_TRACKING_URI): MLflow's REST API (`/api/2.0/mlflow/
  registered-models/...`, `model-versions/search`) through urllib, with the credentials MLflow's
  client would send (MLFLOW_TRACKING_USERNAME and _PASSWORD, or MLFLOW_TRACKING_TOKEN).

Other stores (e.g. `postgresql://`) cannot be read without MLflow: `open_registry` returns None
and the command leaves the check to MLflow. Nothing here writes; the commands that act on a
version (promote, generate) still resolve it through MLflow, so a version that changes between
the check and the act is caught there.
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import sqlite3
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aigc_core import names
from aigc_core.paths import Home

DEFAULT_ALIAS = "champion"  # what a bare NAME means (tasks.tracking.CHAMPION)
DELETED_STAGE = "Deleted_Internal"  # mlflow.entities.model_registry.model_version_stages
DEFAULT_WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME
HTTP_TIMEOUT_S = 10.0
LISTED_NAMES = 20  # model names an error message lists before "... and N more"


class RegistryUnavailable(RuntimeError):
    """The registry could not be read: a server that does not answer or refuses the
    credentials, a file that is not an MLflow store. Not the user's input: exit 1."""


class ModelRefError(ValueError):
    """A model, version or alias the registry does not hold: the message names it and lists
    what there is."""


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: its live versions (ascending) and aliases (alias -> version)."""

    name: str
    versions: tuple[int, ...] = ()
    aliases: Mapping[str, int] = field(default_factory=dict)


class Registry(Protocol):
    def model_names(self) -> list[str]: ...

    def model(self, name: str) -> ModelInfo | None: ...

    def list_models(self) -> list[dict]: ...

    def version_tags(self, name: str, version: int) -> dict[str, str]: ...


# --- which store ----------------------------------------------------------------------------


def tracking_uri(home: Home) -> str:
    """The store the pipeline uses (as `tasks.tracking.Tracker` chooses it): the tracking server
    the user configured with MLFLOW_TRACKING_URI, else the home's SQLite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or home.tracking_uri


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///path` URI (SQLAlchemy's form: three slashes then the path, so an
    absolute path has four); None for other URIs and for in-memory SQLite."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = urllib.parse.unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    return Path(raw) if raw and raw != ":memory:" else None


def open_registry(home: Home) -> Registry | None:
    """A reader of the home's registry, or None where only MLflow itself can read the store."""
    uri = tracking_uri(home)
    path = sqlite_path(uri)
    if path is not None:
        return SqliteRegistry(path)
    if uri.startswith(("http://", "https://")):
        return RestRegistry(uri)
    return None


# --- checks the commands make ---------------------------------------------------------------


def check_model(registry: Registry, name: str) -> ModelInfo:
    """The registered model `name`; ModelRefError listing the registered ones otherwise."""
    info = registry.model(names.model(name))
    if info is None:
        raise ModelRefError(_no_model(name, registry.model_names()))
    return info


def check_version(registry: Registry, name: str, version: str | int) -> ModelInfo:
    """Model `name` with `version` among its live versions; ModelRefError listing them
    otherwise."""
    info = check_model(registry, name)
    if int(names.version(version)) not in info.versions:
        raise ModelRefError(_no_version(info, int(version)))
    return info


def resolve_ref(registry: Registry, ref: str) -> tuple[str, int]:
    """The (model, version) a reference names: NAME (its champion), NAME@ALIAS or NAME/VERSION.
    ModelRefError when the model, the version or the alias does not exist."""
    name, alias, version = names.parse_model_ref(names.model_ref(ref), DEFAULT_ALIAS)
    info = check_model(registry, name)
    if alias is None:
        if int(version) not in info.versions:
            raise ModelRefError(_no_version(info, int(version)))
        return name, int(version)
    if alias not in info.aliases:
        raise ModelRefError(_no_alias(info, alias))
    return name, info.aliases[alias]


def model_uri_ref(uri: str) -> str | None:
    """The NAME@ALIAS or NAME/VERSION of a `models:/` URI that names a registered version
    (`models:/aigc-dcgan-digits@champion`, `models:/m/3`); None for any other URI (`runs:/`, a
    folder, a stage name such as models:/m/Production), which MLflow checks itself."""
    if not uri.startswith("models:/"):
        return None
    ref = uri[len("models:/") :]
    if "@" in ref:
        return ref
    name, _, tail = ref.rpartition("/")
    return ref if name and tail.isdigit() else None


def format_versions(versions: Iterable[int]) -> str:
    """Version numbers as short ranges: [1, 2, 3, 5, 7, 8] -> "1-3, 5, 7-8"."""
    runs: list[list[int]] = []
    for v in sorted(set(versions)):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _no_model(name: str, registered: list[str]) -> str:
    if not registered:
        return (
            f"no registered model {name!r}: the registry holds no models yet "
            f"(`aigc run` trains and registers one)"
        )
    shown = ", ".join(registered[:LISTED_NAMES])
    if len(registered) > LISTED_NAMES:
        shown += f", ... and {len(registered) - LISTED_NAMES} more"
    close = difflib.get_close_matches(name, registered, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no registered model {name!r}; registered: {shown} (see `aigc models`){hint}"


def _no_version(info: ModelInfo, version: int) -> str:
    if not info.versions:
        return f"model {info.name!r} has no version {version}: it has no versions"
    return (
        f"model {info.name!r} has no version {version}; versions: {format_versions(info.versions)}"
    )


def _no_alias(info: ModelInfo, alias: str) -> str:
    held = ", ".join(f"{a} (v{v})" for a, v in sorted(info.aliases.items())) or "none"
    what = (
        f"promote a version first (`aigc promote {info.name} VERSION`), or name one as "
        f"{info.name}/VERSION"
        if alias == DEFAULT_ALIAS
        else f"name a version as {info.name}/VERSION"
    )
    versions = format_versions(info.versions) or "none"
    return (
        f"model {info.name!r} has no alias {alias!r}; aliases: {held}; versions: {versions}: {what}"
    )


def _listing(models: Mapping[str, Mapping[str, int]], versions: Iterable[tuple]) -> list[dict]:
    """What `tasks.registry.list_models` returns, from plain rows: models (name -> aliases) and
    versions (name, version, run_id, tags), sorted by name, versions newest first."""
    by_name: dict[str, list[tuple[int, str, dict]]] = {}
    for name, version, run_id, tags in versions:
        by_name.setdefault(name, []).append((int(version), run_id or "", dict(tags)))
    out = []
    for name in sorted(models):
        aliases = {a: str(v) for a, v in models[name].items()}
        rows = sorted(by_name.get(name, []), key=lambda r: -r[0])
        out.append(
            {
                "name": name,
                "aliases": aliases,
                "versions": [
                    {
                        "version": str(v),
                        "run_id": run_id,
                        "tags": tags,
                        "aliases": sorted(a for a, av in aliases.items() if av == str(v)),
                    }
                    for v, run_id, tags in rows
                ],
            }
        )
    return out


# --- the home's SQLite store ----------------------------------------------------------------


class SqliteRegistry:
    """MLflow's registry tables of a SQLite store, read-only."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def model_names(self) -> list[str]:
        rows = self._query("registered_models", "SELECT name FROM registered_models {where}")
        return sorted(r[0] for r in rows)

    def model(self, name: str) -> ModelInfo | None:
        found = self._query(
            "registered_models", "SELECT 1 FROM registered_models {where} AND name = ?", (name,)
        )
        if not found:
            return None
        versions = self._query(
            "model_versions",
            "SELECT version FROM model_versions {where} AND name = ? AND current_stage != ?",
            (name, DELETED_STAGE),
        )
        aliases = self._query(
            "registered_model_aliases",
            "SELECT alias, version FROM registered_model_aliases {where} AND name = ?",
            (name,),
        )
        return ModelInfo(name, tuple(sorted(int(v) for (v,) in versions)), dict(aliases))

    def list_models(self) -> list[dict]:
        models: dict[str, dict[str, int]] = {n: {} for n in self.model_names()}
        sql = "SELECT name, alias, version FROM registered_model_aliases {where}"
        for name, alias, version in self._query("registered_model_aliases", sql):
            models.setdefault(name, {})[alias] = version
        tags: dict[tuple[str, int], dict[str, str]] = {}
        sql = "SELECT name, version, key, value FROM model_version_tags {where}"
        for name, version, key, value in self._query("model_version_tags", sql):
            tags.setdefault((name, int(version)), {})[key] = value
        sql = "SELECT name, version, run_id FROM model_versions {where} AND current_stage != ?"
        rows = self._query("model_versions", sql, (DELETED_STAGE,))
        versions = [(n, v, r, tags.get((n, int(v)), {})) for n, v, r in rows if n in models]
        return _listing(models, versions)

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        """The tags of version `version` of model `name` ({} for a version it does not hold)."""
        sql = "SELECT key, value FROM model_version_tags {where} AND name = ? AND version = ?"
        return dict(self._query("model_version_tags", sql, (name, int(version))))

    def _query(self, table: str, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of `sql`, whose `{where}` becomes the workspace filter of `table` (or a true
        condition on stores from before workspaces); [] when the store or table does not exist
        yet."""
        if not self.path.exists():
            return []
        try:
            con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=20)
        except sqlite3.Error as e:
            raise RegistryUnavailable(f"cannot open the MLflow store {self.path}: {e}") from None
        try:
            columns = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if not columns:  # a store MLflow has not created its registry tables in
                return []
            if "workspace" in columns:
                where, params = "WHERE workspace = ?", (DEFAULT_WORKSPACE, *params)
            else:
                where = "WHERE 1 = 1"
            return con.execute(sql.format(where=where), params).fetchall()
        except sqlite3.Error as e:
            raise RegistryUnavailable(f"cannot read the MLflow store {self.path}: {e}") from None
        finally:
            con.close()


# --- a tracking server ----------------------------------------------------------------------


class RestRegistry:
    """The registry of an MLflow tracking server, through its REST API."""

    def __init__(self, base_url: str, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env
        self.base = base_url.rstrip("/")
        self.timeout = float(self.env.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or HTTP_TIMEOUT_S)

    def model_names(self) -> list[str]:
        return sorted(m["name"] for m in self._registered_models())

    def model(self, name: str) -> ModelInfo | None:
        found = self._get("registered-models/get", {"name": names.model(name)})
        if found is None:
            return None
        rm = found.get("registered_model", {})
        aliases = {a["alias"]: int(a["version"]) for a in rm.get("aliases", [])}
        # the name passed names.model: letters, digits, '.', '_', '-', so it needs no quoting
        query = {"filter": f"name='{name}'"}
        versions = self._pages("model-versions/search", "model_versions", query)
        return ModelInfo(name, tuple(sorted(int(v["version"]) for v in versions)), aliases)

    def list_models(self) -> list[dict]:
        models = {
            m["name"]: {a["alias"]: int(a["version"]) for a in m.get("aliases", [])}
            for m in self._registered_models()
        }
        versions = [
            (
                v["name"],
                v["version"],
                v.get("run_id", ""),
                {t["key"]: t.get("value", "") for t in v.get("tags", [])},
            )
            for v in self._pages("model-versions/search", "model_versions", {})
        ]
        return _listing(models, [v for v in versions if v[0] in models])

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        found = self._get("model-versions/get", {"name": name, "version": str(int(version))})
        tags = (found or {}).get("model_version", {}).get("tags", [])
        return {t["key"]: t.get("value", "") for t in tags}

    def _registered_models(self) -> list[dict]:
        return self._pages("registered-models/search", "registered_models", {"max_results": 1000})

    def _pages(self, path: str, key: str, params: dict) -> list[dict]:
        items: list[dict] = []
        token = None
        while True:
            page = self._get(path, {**params, **({"page_token": token} if token else {})}) or {}
            items += page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return items

    def _get(self, path: str, params: Mapping[str, object]) -> dict | None:
        """The JSON answer of GET /api/2.0/mlflow/<path>; None when the server says the resource
        does not exist (404); RegistryUnavailable for everything else that is not a 200."""
        url = f"{self.base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._tls()) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            if e.code in (401, 403):
                raise RegistryUnavailable(
                    f"the MLflow server {self.base} refused the request (HTTP {e.code}): set "
                    f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (after `aigc up`: "
                    f"source <home>/services/env.sh)"
                ) from None
            raise RegistryUnavailable(
                f"the MLflow server {self.base} answered HTTP {e.code} to {path}: {_message(e)}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise RegistryUnavailable(
                f"cannot reach the MLflow server {self.base}: {reason}"
            ) from None

    def _headers(self) -> dict[str, str]:
        user = self.env.get("MLFLOW_TRACKING_USERNAME")
        password = self.env.get("MLFLOW_TRACKING_PASSWORD")
        token = self.env.get("MLFLOW_TRACKING_TOKEN")
        headers = {"Accept": "application/json"}
        if user and password:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _tls(self) -> ssl.SSLContext | None:
        """As MLflow's client: MLFLOW_TRACKING_INSECURE_TLS skips verification,
        MLFLOW_TRACKING_SERVER_CERT_PATH names a CA bundle."""
        if not self.base.startswith("https://"):
            return None
        if self.env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            return ssl._create_unverified_context()  # noqa: S323 - the user asked for it
        return ssl.create_default_context(cafile=self.env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))


def _message(error: urllib.error.HTTPError) -> str:
    """MLflow's error message from an error answer's JSON body, else the HTTP reason."""
    try:
        return json.loads(error.read() or b"{}").get("message") or str(error.reason)
    except (ValueError, OSError):
        return str(error.reason)
