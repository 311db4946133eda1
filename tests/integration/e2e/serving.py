"""`mlflow models serve` in tests: start it on a free loopback port, wait for /ping, call it,
stop it. Shared by the serving tests (the champion, the text params, the model's own env)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def model_server(
    model_uri: str,
    env: dict[str, str],
    cwd: Path,
    mlflow: Sequence[str | Path] = (sys.executable, "-m", "mlflow"),
    timeout: float = 180,
) -> Iterator[str]:
    """`mlflow models serve -m model_uri --env-manager local` (run as `mlflow`) on a free port
    of 127.0.0.1 until /ping answers; yields its base URL and stops it at the end."""
    port = free_port()
    server = subprocess.Popen(
        [*mlflow, "models", "serve", "-m", model_uri, "--env-manager", "local"]
        + ["-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"server did not answer /ping in {timeout:.0f} s"
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        server.stderr.close()


def invoke(base: str, body: dict) -> tuple[int, dict]:
    """POST `body` to /invocations: (HTTP status, the JSON answer)."""
    req = urllib.request.Request(
        f"{base}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
