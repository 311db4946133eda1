"""Served mode: a Prefect server, a process worker and an MLflow server on 127.0.0.1.

Each service runs in its own process session, with its log and pid under `<home>/services/`,
so `aigc down` can stop it and everything it started. Nothing here imports Prefect or MLflow:
they run as their own commands from this virtualenv.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from aigc_core.paths import Home

POOL = "aigc-process"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
# deployments on the local process pool; the scale-out ones (e.g. nightly-gpu on a Kubernetes
# pool) are deployed by name once their pool exists
LOCAL_DEPLOYMENTS = ["nightly-retrain/nightly", "batch-generate/on-demand", "ingest/on-demand"]


class ServiceError(RuntimeError):
    """A service failed to start, answer, or stop."""


@dataclass
class Endpoints:
    prefect_api_url: str
    prefect_ui_url: str
    mlflow_url: str

    @classmethod
    def on(cls, prefect_port: int, mlflow_port: int) -> Endpoints:
        return cls(
            f"http://127.0.0.1:{prefect_port}/api",
            f"http://127.0.0.1:{prefect_port}",
            f"http://127.0.0.1:{mlflow_port}",
        )


def state_dir(home: Home) -> Path:
    return home.root / "services"


def service_env(home: Home, ep: Endpoints) -> dict[str, str]:
    """The environment every served process (and the flow runs the worker starts) gets."""
    env = dict(os.environ)
    env.update(
        {
            "AIGC_HOME": str(home.root),
            "PREFECT_HOME": str(home.prefect_home),
            "PREFECT_API_URL": ep.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
            "MLFLOW_TRACKING_URI": ep.mlflow_url,
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            # a dead tracking server fails a run in about a minute instead of retrying for many
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
            "AIGC_REPO": str(REPO),
        }
    )
    return env


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _spawn(name: str, cmd: list[str], home: Home, env: dict[str, str]) -> int:
    d = state_dir(home)
    d.mkdir(parents=True, exist_ok=True)
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


def start_mlflow(home: Home, ep: Endpoints, timeout: float = 90) -> None:
    port = int(ep.mlflow_url.rsplit(":", 1)[1])
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
        ],
        home,
        service_env(home, ep),
    )
    _wait_http(f"{ep.mlflow_url}/health", "mlflow", home, timeout)


def up(
    home: Home, prefect_port: int = 4200, mlflow_port: int = 5000, timeout: float = 120
) -> Endpoints:
    """Start the three services (idempotent: running ones are left as they are)."""
    home.ensure()
    ep = Endpoints.on(prefect_port, mlflow_port)
    env = service_env(home, ep)
    running = status(home)
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
            env,
        )
        _wait_http(f"{ep.prefect_api_url}/health", "prefect-server", home, timeout)
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
    return ep


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
    names = [a for d in LOCAL_DEPLOYMENTS for a in ("--name", d)]
    p = _prefect(
        ["--no-prompt", "deploy", *names, "--prefect-file", str(PREFECT_FILE)], env, timeout=300
    )
    if p.returncode != 0:
        raise ServiceError(f"prefect deploy failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def endpoints(home: Home) -> Endpoints:
    f = state_dir(home) / "endpoints.json"
    if not f.exists():
        raise ServiceError(f"no services recorded under {home.root}; start them with `aigc up`")
    return Endpoints(**json.loads(f.read_text()))


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
