"""Served mode: a Prefect server, a process worker and an MLflow server on 127.0.0.1.

Each service runs in its own process session, with its log and pid under `<home>/services/`,
so `aigc down` can stop it and everything it started. Nothing here imports Prefect or MLflow:
they run as their own commands from this virtualenv.

Closed by default: a web page open in the user's browser can reach 127.0.0.1, so loopback alone
protects nothing. The Prefect API needs a random auth string (HTTP basic auth), checks a CSRF
token on writes and allows CORS only for its own UI; the MLflow server refuses foreign Host and
Origin headers and, with `mlflow_auth`, needs a user and password (MLflow's basic-auth app). The
secrets live in `<home>/services/secrets.json` (mode 0600, in a 0700 folder), and
`<home>/services/env.sh` (0600) exports what a shell needs: `source` it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from aigc_core import provenance
from aigc_core.paths import Home

POOL = "aigc-process"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
# deployments on the local process pool; the scale-out ones (e.g. nightly-gpu on a Kubernetes
# pool) are deployed by name once their pool exists
LOCAL_DEPLOYMENTS = ["nightly-retrain/nightly", "batch-generate/on-demand", "ingest/on-demand"]
# `prefect deploy --name FLOW/DEPLOYMENT` matches FLOW against the entrypoint's function name
# (dashes read as underscores), not the flow's name: ingest's function is `ingest_dataset`, and
# two deployments are called on-demand, so `ingest/on-demand` selected nothing
_DEPLOY_SELECTORS = {"ingest/on-demand": "ingest-dataset/on-demand"}


MLFLOW_ADMIN = "aigc"
# the project's loggers, forwarded to each flow run's log in Prefect
PROJECT_LOGGERS = ",".join(provenance.PACKAGES)


class ServiceError(RuntimeError):
    """A service failed to start, answer, or stop."""


@dataclass
class Endpoints:
    prefect_api_url: str
    prefect_ui_url: str
    mlflow_url: str
    mlflow_auth: bool = False  # MLflow's basic-auth app (`aigc up --mlflow-auth`)

    @classmethod
    def on(cls, prefect_port: int, mlflow_port: int, mlflow_auth: bool = False) -> Endpoints:
        return cls(
            f"http://127.0.0.1:{prefect_port}/api",
            f"http://127.0.0.1:{prefect_port}",
            f"http://127.0.0.1:{mlflow_port}",
            mlflow_auth,
        )

    @property
    def mlflow_port(self) -> int:
        return int(self.mlflow_url.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Secrets:
    """The served mode's credentials: created once by `aigc up`, reused after."""

    prefect_auth_string: str  # PREFECT_SERVER_API_AUTH_STRING / PREFECT_API_AUTH_STRING
    mlflow_password: str  # the MLflow admin's (user MLFLOW_ADMIN), used with --mlflow-auth
    mlflow_flask_secret_key: str  # signs the basic-auth app's CSRF tokens (its own UI forms)

    @staticmethod
    def fresh() -> dict[str, str]:
        return {
            "prefect_auth_string": f"aigc:{secrets.token_urlsafe(32)}",
            "mlflow_password": secrets.token_urlsafe(32),
            "mlflow_flask_secret_key": secrets.token_urlsafe(32),
        }


def state_dir(home: Home) -> Path:
    return home.root / "services"


def secrets_file(home: Home) -> Path:
    return state_dir(home) / "secrets.json"


def env_file(home: Home) -> Path:
    return state_dir(home) / "env.sh"


def _private_dir(home: Home) -> Path:
    """The services folder, readable by its owner only (it holds secrets and logs)."""
    d = state_dir(home)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if d.stat().st_mode & 0o077:
        d.chmod(0o700)
    return d


def _write_private(path: Path, text: str, *, replace: bool) -> bool:
    """Write `text` to `path` with mode 0600 from the first byte (a temporary file created 0600,
    then renamed or linked into place). With replace=False an existing file is kept and False
    is returned: two `aigc up` at once agree on one set of secrets."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def ensure_secrets(home: Home) -> Secrets:
    """The home's secrets, generated on the first `aigc up` and reused by the next ones."""
    _private_dir(home)
    f = secrets_file(home)
    _write_private(f, json.dumps(Secrets.fresh(), indent=2) + "\n", replace=False)
    kept = _read_private_json(f)
    if missing := {k: v for k, v in Secrets.fresh().items() if k not in kept}:
        # a file from an older version: keep what it has, add what is new
        _write_private(f, json.dumps({**kept, **missing}, indent=2) + "\n", replace=True)
    return read_secrets(home)


def read_secrets(home: Home) -> Secrets:
    f = secrets_file(home)
    data = _read_private_json(f)
    if missing := [k for k in Secrets.__dataclass_fields__ if not isinstance(data.get(k), str)]:
        raise ServiceError(f"{f} lacks {', '.join(missing)}; run `aigc up` to complete it")
    return Secrets(**{k: data[k] for k in Secrets.__dataclass_fields__})


def _read_private_json(f: Path) -> dict:
    try:
        st = f.lstat()
    except FileNotFoundError:
        raise ServiceError(
            f"no served-mode secrets in {f}; start the services with `aigc up`"
        ) from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ServiceError(
            f"{f} must be a file of yours with mode 0600 (it is {oct(st.st_mode & 0o777)}); "
            "its secrets may have leaked: stop the services (`aigc down`), delete it, and run "
            "`aigc up` to create new ones"
        )
    try:
        data = json.loads(f.read_text())
    except ValueError as e:
        raise ServiceError(f"{f} is not valid ({e}); delete it and run `aigc up` again") from None
    if not isinstance(data, dict):
        raise ServiceError(f"{f} is not valid; delete it and run `aigc up` again")
    return data


def client_env(home: Home, ep: Endpoints) -> dict[str, str]:
    """What a client of the served mode needs: where the servers are, and its credentials."""
    s = read_secrets(home)
    env = {
        "AIGC_HOME": str(home.root),
        "PREFECT_API_URL": ep.prefect_api_url,
        "PREFECT_API_AUTH_STRING": s.prefect_auth_string,
        "MLFLOW_TRACKING_URI": ep.mlflow_url,
    }
    if ep.mlflow_auth:
        env["MLFLOW_TRACKING_USERNAME"] = MLFLOW_ADMIN
        env["MLFLOW_TRACKING_PASSWORD"] = s.mlflow_password
    return env


def service_env(home: Home, ep: Endpoints) -> dict[str, str]:
    """The environment every served process (and the flow runs the worker starts) gets."""
    env = dict(os.environ)
    # a user's own settings must not open what `aigc up` closes, nor stand in for its credentials
    for k in (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE",
        "PREFECT_API_KEY",
    ):
        env.pop(k, None)
    env.update(client_env(home, ep))
    env.update(
        {
            "PREFECT_HOME": str(home.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
            "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "true",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # flow runs log; no stray prints
            # a dead tracking server fails a run in about a minute instead of retrying for many
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
            "GX_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_EXTRA_LOGGERS": PROJECT_LOGGERS,
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
            "PYTHONUNBUFFERED": "1",
            "AIGC_REPO": str(REPO),
        }
    )
    return env


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _spawn(name: str, cmd: list[str], home: Home, env: dict[str, str]) -> int:
    d = _private_dir(home)
    log = open(d / f"{name}.log", "ab")  # noqa: SIM115 (handed to the child)
    p = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=home.root,
        start_new_session=True,
    )
    (d / f"{name}.pid").write_text(str(p.pid))
    return p.pid


def _wait_http(url: str, name: str, home: Home, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        pid = _pid(home, name)
        if pid is None or not _alive(pid):
            raise ServiceError(f"{name} exited during start-up; see {state_dir(home) / name}.log")
        time.sleep(0.5)
    raise ServiceError(
        f"{name} did not answer {url} within {timeout:.0f} s; see {state_dir(home) / name}.log"
    )


def _pid(home: Home, name: str) -> int | None:
    f = state_dir(home) / f"{name}.pid"
    try:
        return int(f.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _prefect(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "prefect"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _http(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> int:
    """The status of one request (errors included), for start-up checks (a first password
    check on a busy machine can take seconds)."""
    req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def mlflow_auth_config(home: Home) -> Path:
    """MLflow's basic-auth settings for this home: its user database under services/, no
    permission for anyone but the admin (whose password comes from the secrets, at first start)."""
    f = state_dir(home) / "mlflow-auth.ini"
    db = state_dir(home) / "mlflow-auth.db"
    _write_private(
        f,
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{db}\n"
        f"admin_username = {MLFLOW_ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # a password check costs a scrypt hash (seconds on a busy 2-core machine), and every
        # REST call of a client is checked: remember good ones for a while (one worker, so a
        # password change through the API takes effect at once)
        "auth_cache_ttl_seconds = 600\n",
        replace=True,
    )
    return f


def start_mlflow(home: Home, ep: Endpoints, timeout: float = 90) -> None:
    port = ep.mlflow_port
    env = service_env(home, ep)
    auth: list[str] = []
    if ep.mlflow_auth:
        auth = ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(mlflow_auth_config(home))
        env["MLFLOW_AUTH_ADMIN_USERNAME"] = MLFLOW_ADMIN
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = read_secrets(home).mlflow_password
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = read_secrets(home).mlflow_flask_secret_key
    _spawn(
        "mlflow",
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            home.tracking_uri,
            "--artifacts-destination",
            str(home.mlflow_artifacts),
            "--workers",
            "1",
            # DNS rebinding: only our own address is a valid Host; CORS only for its own UI
            # (MLflow itself also lets any http://localhost or 127.0.0.1 origin write)
            "--allowed-hosts",
            f"127.0.0.1:{port},localhost:{port}",
            "--cors-allowed-origins",
            f"http://127.0.0.1:{port}",
            *auth,
        ],
        home,
        env,
    )
    _wait_http(f"{ep.mlflow_url}/health", "mlflow", home, timeout)
    if ep.mlflow_auth:
        _check_mlflow_auth(home, ep)


def _check_mlflow_auth(home: Home, ep: Endpoints) -> None:
    """The admin password of the secrets opens the server; no password does not."""
    url = f"{ep.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    if _http("GET", url) != 401:
        raise ServiceError(f"the MLflow server at {ep.mlflow_url} answers without credentials")
    admin = _basic(f"{MLFLOW_ADMIN}:{read_secrets(home).mlflow_password}")
    if (code := _http("GET", url, admin)) != 200:
        raise ServiceError(
            f"the MLflow server refused the admin password of {secrets_file(home)} ({code}): "
            f"its user database {state_dir(home) / 'mlflow-auth.db'} was made with another one; "
            "stop the services (`aigc down`), delete that database, and run `aigc up` again"
        )


def _check_prefect_auth(home: Home, ep: Endpoints) -> None:
    """The running Prefect server refuses a request without credentials and accepts ours."""
    version = f"{ep.prefect_api_url}/admin/version"
    if (unauth := _http("GET", version)) != 401:
        raise ServiceError(
            f"the Prefect server at {ep.prefect_ui_url} answers requests without credentials "
            f"({unauth}); it was not started by this version of `aigc up`: stop it (`aigc down`) "
            "and run `aigc up` again"
        )
    auth = _basic(read_secrets(home).prefect_auth_string)
    if (code := _http("GET", version, auth)) != 200:
        raise ServiceError(
            f"the Prefect server at {ep.prefect_ui_url} refused the auth string of "
            f"{secrets_file(home)} ({code}); stop the services (`aigc down`) and run `aigc up`"
        )


def prefect_server_env(home: Home, ep: Endpoints) -> dict[str, str]:
    """The Prefect server's settings: basic auth with the home's string, CSRF tokens on
    writes, CORS for its own UI only."""
    env = service_env(home, ep)
    env.update(
        {
            "PREFECT_SERVER_API_AUTH_STRING": read_secrets(home).prefect_auth_string,
            "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ep.prefect_ui_url,
        }
    )
    return env


def write_env_file(home: Home, ep: Endpoints) -> Path:
    """`<home>/services/env.sh` (0600): `source` it to use the served mode from a shell."""
    lines = [
        "# Written by `aigc up`: the served mode's addresses and credentials. Keep it private;",
        "# use it with `source` (not `cat`), e.g. before `prefect deployment run`.",
        *(f"export {k}={shlex.quote(v)}" for k, v in client_env(home, ep).items()),
    ]
    f = env_file(home)
    _write_private(f, "\n".join(lines) + "\n", replace=True)
    return f


def up(
    home: Home,
    prefect_port: int = 4200,
    mlflow_port: int = 5000,
    timeout: float = 120,
    mlflow_auth: bool = False,
    notify: str | None = None,
) -> Endpoints:
    """Start the three services (idempotent: running ones are left as they are); with
    `notify`, failed runs are reported there (`set_notify`)."""
    home.ensure()
    ep = Endpoints.on(prefect_port, mlflow_port, mlflow_auth)
    running = status(home)
    if running.get("mlflow"):
        was = _recorded_endpoints(home)
        if was is not None and was.mlflow_auth != mlflow_auth:
            raise ServiceError(
                f"the MLflow server runs {'with' if was.mlflow_auth else 'without'} basic auth; "
                "stop the services with `aigc down` to change that"
            )
    ensure_secrets(home)
    env = service_env(home, ep)
    for name, port in (("prefect-server", prefect_port), ("mlflow", mlflow_port)):
        if not running.get(name) and not port_free(port):
            raise ServiceError(
                f"port {port} on 127.0.0.1 is taken by another program; "
                f"choose another with --{name.split('-')[0]}-port"
            )
    if not running.get("prefect-server"):
        _spawn(
            "prefect-server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ],
            home,
            prefect_server_env(home, ep),
        )
        _wait_http(f"{ep.prefect_api_url}/health", "prefect-server", home, timeout)
    _check_prefect_auth(home, ep)
    if not running.get("mlflow"):
        start_mlflow(home, ep, timeout)
    ensure_pool(env)
    if not running.get("worker"):
        _spawn(
            "worker",
            [
                str(BIN / "prefect"),
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
                "--limit",
                "4",
            ],
            home,
            env,
        )
    (state_dir(home) / "endpoints.json").write_text(json.dumps(asdict(ep), indent=2))
    write_env_file(home, ep)
    if notify:
        set_notify(home, notify, env)
    return ep


def set_notify(home: Home, target: str, env: dict[str, str]) -> str:
    """Send failed and crashed flow runs' notices to `target`, a webhook URL (saved as a Prefect
    notification block) or a block's slug (`flows.notify`); returns the block's slug."""
    p = subprocess.run(
        [sys.executable, "-m", "flows.notify", "save", target, "--home", str(home.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if p.returncode != 0:
        raise ServiceError(f"--notify: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return p.stdout.strip()


def ensure_pool(env: dict[str, str]) -> None:
    p = _prefect(["work-pool", "inspect", POOL], env)
    if p.returncode != 0:
        p = _prefect(["work-pool", "create", POOL, "--type", "process"], env)
        if p.returncode != 0 and "already exists" not in (p.stdout + p.stderr):
            raise ServiceError(f"could not create work pool {POOL}: {p.stdout}{p.stderr}")


def deploy(home: Home) -> str:
    """Register every deployment of deployments/prefect.yaml with the running server."""
    ep = endpoints(home)
    env = service_env(home, ep)
    ensure_pool(env)
    names = [a for d in LOCAL_DEPLOYMENTS for a in ("--name", _DEPLOY_SELECTORS.get(d, d))]
    p = _prefect(
        ["--no-prompt", "deploy", *names, "--prefect-file", str(PREFECT_FILE)], env, timeout=300
    )
    if p.returncode != 0:
        raise ServiceError(f"prefect deploy failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def _recorded_endpoints(home: Home) -> Endpoints | None:
    f = state_dir(home) / "endpoints.json"
    return Endpoints(**json.loads(f.read_text())) if f.exists() else None


def endpoints(home: Home) -> Endpoints:
    ep = _recorded_endpoints(home)
    if ep is None:
        raise ServiceError(f"no services recorded under {home.root}; start them with `aigc up`")
    return ep


def status(home: Home) -> dict[str, bool]:
    return {
        name: (pid := _pid(home, name)) is not None and _alive(pid)
        for name in ("prefect-server", "mlflow", "worker")
    }


def stop(home: Home, name: str, timeout: float = 20) -> bool:
    """SIGTERM the service's process group, SIGKILL after `timeout`; True if it was running."""
    pid = _pid(home, name)
    if pid is None or not _alive(pid):
        (state_dir(home) / f"{name}.pid").unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    (state_dir(home) / f"{name}.pid").unlink(missing_ok=True)
    return True


def down(home: Home) -> dict[str, bool]:
    # the worker first, so no new flow run starts while the servers go away
    return {name: stop(home, name) for name in ("worker", "mlflow", "prefect-server")}
