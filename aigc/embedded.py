"""The embedded Prefect API: one server per `aigc` command that runs a flow, owned by it.

Without PREFECT_API_URL, Prefect starts a temporary server of its own on first use and gives it
20 s (`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`). In a new home that server first
creates its database: ~25 s on a quiet 2-core machine here, ~30 s on a 2-core AVX2 EPYC, more
under load, so a first `aigc run` failed with "Timed out while attempting to connect to
ephemeral Prefect API server". And a command killed with SIGKILL left that server running.

This module starts the same server (uvicorn + `prefect.server.api.server:create_app`, UI and
background services off, as Prefect's ephemeral mode does), with three differences:

- it starts first thing, so its ~7 s of imports overlap the command's own imports, and the
  command waits for it only when its flow begins;
- the wait fits the home: a first start, which creates the database, gets minutes (the server
  process is watched, so a crash still fails at once); `AIGC_PREFECT_STARTUP_TIMEOUT` overrides;
  a lock keeps two first starts in one home from migrating the same database at once;
- the server dies with the command: Linux's parent-death signal, so a `kill -9` of `aigc run`
  takes its server down too; and it only answers this command (a random API auth string, no
  CORS), on a socket bound to 127.0.0.1 before the server starts (no port race).

Nothing here imports Prefect: the server runs as its own process from this virtualenv.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from filelock import FileLock, Timeout

from aigc_core.paths import Home

TIMEOUT_ENV = "AIGC_PREFECT_STARTUP_TIMEOUT"
FIRST_START_TIMEOUT = 600.0  # creating the database: ~25-30 s on 2 quiet cores, minutes loaded
START_TIMEOUT = 120.0  # an existing database: ~8 s here
_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """The embedded Prefect server did not start."""


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux); if it is already gone,
    exit instead of serving nobody."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


class EmbeddedPrefect:
    """A Prefect API server on 127.0.0.1 for the life of this process."""

    def __init__(self, home: Home):
        self.home = home
        self.log_path = home.prefect_home / "server.log"
        self.process: subprocess.Popen | None = None
        self.url = ""
        self._lock: FileLock | None = None
        self._first = False
        self._ready = False

    @property
    def first_start(self) -> bool:
        return self._first

    @property
    def ready_marker(self) -> Path:
        """Written after the first start that answered: the database exists and is migrated."""
        return self.home.prefect_home / ".started"

    def timeout(self) -> float:
        raw = os.environ.get(TIMEOUT_ENV)
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = 0.0
            if value <= 0:
                raise EmbeddedServerError(f"{TIMEOUT_ENV}={raw!r}: give a number of seconds > 0")
            return value
        return FIRST_START_TIMEOUT if self._first else START_TIMEOUT

    def start(self) -> None:
        """Spawn the server and point this process's Prefect settings at it; do not wait."""
        prefect_home = self.home.prefect_home
        prefect_home.mkdir(parents=True, exist_ok=True)
        if not self.ready_marker.exists():
            # a first start creates and migrates the database: one process at a time
            self._lock = FileLock(str(prefect_home / ".first-start.lock"))
            try:
                self._lock.acquire(timeout=FIRST_START_TIMEOUT)
            except Timeout:
                raise EmbeddedServerError(
                    f"another aigc command has been creating the Prefect database in "
                    f"{prefect_home} for {FIRST_START_TIMEOUT:.0f} s"
                ) from None
            self._first = not self.ready_marker.exists()
        auth = secrets.token_urlsafe(32)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        env = {
            **os.environ,
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "PREFECT_SERVER_API_AUTH_STRING": auth,
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "prefect.server.api.server:create_app",
            "--fd",
            str(sock.fileno()),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
        parent = os.getpid()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {parent}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(sock.fileno(),),
                preexec_fn=lambda: _die_with_parent(parent),
            )
        sock.close()  # the child holds its own copy
        atexit.register(self.stop)
        self.url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = self.url
        os.environ["PREFECT_API_AUTH_STRING"] = auth

    def wait(self) -> None:
        """Block until the server answers its health check."""
        if self._ready:
            return
        assert self.process is not None, "start() first"
        timeout = self.timeout()
        deadline = time.monotonic() + timeout
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise EmbeddedServerError(
                        f"the embedded Prefect server exited with code {code} during start-up:"
                        f"\n{self._log_tail()}\n(full log: {self.log_path})"
                    )
                try:
                    with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedServerError(
                        f"the embedded Prefect server did not answer within {timeout:g} s "
                        f"(set {TIMEOUT_ENV} to wait longer); log: {self.log_path}"
                    )
                time.sleep(0.1)
            self._ready = True
            if self._first:
                self.ready_marker.touch()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def stop(self) -> None:
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


_server: EmbeddedPrefect | None = None


def start(home: Home) -> EmbeddedPrefect | None:
    """Start this process's embedded server unless a Prefect API is configured (served mode)."""
    global _server
    if _server is None and not os.environ.get("PREFECT_API_URL"):
        _server = EmbeddedPrefect(home)
        _server.start()
    return _server


def wait() -> None:
    """Wait for the server `start` launched (a no-op in served mode)."""
    if _server is not None:
        _server.wait()


def starting_message() -> str:
    if _server is not None and _server.first_start:
        return "starting Prefect (a new home: creating its database, ~30 s) and MLflow..."
    return "starting Prefect and MLflow..."
