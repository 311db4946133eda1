"""Served mode end to end: real Prefect and MLflow servers and a worker on 127.0.0.1.

`aigc up` starts them, `aigc deploy` registers the deployments, and runs are triggered with
`prefect deployment run`, as a user would. Services are stopped at the end, even on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aigc import services
from aigc_core.paths import Home

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
MODEL = "aigc-dcgan-digits"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("served")).ensure()
    try:
        ep = services.up(home, free_port(), free_port(), timeout=180)
        services.deploy(home)
        yield home, ep
    finally:
        services.down(home)
        assert not any(services.status(home).values())


def prefect(home, ep, *args, timeout=600) -> subprocess.CompletedProcess:
    env = services.service_env(home, ep)
    return subprocess.run(
        [str(BIN / "prefect"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=home.root,
    )


def trigger(home, ep, deployment: str, *params: str, watch: bool = False):
    args = ["deployment", "run", deployment]
    for p in params:
        args += ["--param", p]
    if watch:
        args.append("--watch")
    return prefect(home, ep, *args)


def flow_runs(ep) -> list[dict]:
    """All flow runs, read from the Prefect REST API."""
    import urllib.request

    req = urllib.request.Request(
        f"{ep.prefect_api_url}/flow_runs/filter",
        method="POST",
        data=json.dumps({"limit": 200}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def mlflow_client(ep):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=ep.mlflow_url, registry_uri=ep.mlflow_url)


def wait_for(pred, timeout: float, what: str, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_nightly_deployment_run_promotes_and_writes_a_batch(served):
    home, ep = served
    p = trigger(home, ep, "nightly-retrain/nightly", "preset=smoke", "n_generate=32", watch=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Completed" in p.stdout
    champion = mlflow_client(ep).get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["promotion.decision"] == "promoted"
    batches = [d for d in (home.content).iterdir() if not d.name.startswith(".")]
    assert len(batches) == 1
    manifest = json.loads((batches[0] / "manifest.json").read_text())
    assert manifest["model_version"] == "1" and manifest["n_generated"] == 32

    # an on-demand batch from that champion, through the batch-generate deployment
    p = trigger(
        home,
        ep,
        "batch-generate/on-demand",
        "model=aigc-dcgan-digits@champion",
        "n=24",
        "shards=2",
        watch=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    batches = [d for d in home.content.iterdir() if not d.name.startswith(".")]
    assert len(batches) == 2
    fresh = next(
        d for d in batches if json.loads((d / "manifest.json").read_text())["n_generated"] == 24
    )
    assert json.loads((fresh / "manifest.json").read_text())["model_version"] == "1"


def test_four_triggers_run_one_at_a_time_and_none_is_lost(served):
    home, ep = served
    before = {r["id"] for r in flow_runs(ep)}
    for _ in range(4):
        p = trigger(home, ep, "nightly-retrain/nightly", "preset=smoke", "n_generate=16")
        assert p.returncode == 0, p.stdout + p.stderr

    def new_runs():
        return [r for r in flow_runs(ep) if r["id"] not in before]

    def all_final():
        runs = new_runs()
        return (
            len(runs) == 4
            and all(
                r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs
            )
            and runs
        )

    runs = wait_for(all_final, 900, "four nightly runs to finish", every=5)
    assert [r["state_type"] for r in runs] == ["COMPLETED"] * 4
    spans = sorted((r["start_time"], r["end_time"]) for r in runs)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"runs overlapped: {spans}"  # concurrency limit 1
    versions = mlflow_client(ep).search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 5  # the first test's version and four more: none lost


def test_mlflow_down_fails_the_run_cleanly_and_a_rerun_recovers(served):
    home, ep = served
    client = mlflow_client(ep)
    champion_before = str(client.get_model_version_by_alias(MODEL, "champion").version)
    assert services.stop(home, "mlflow")
    started = time.monotonic()
    p = trigger(home, ep, "nightly-retrain/nightly", "preset=smoke", "n_generate=16", watch=True)
    elapsed = time.monotonic() - started
    assert p.returncode != 0
    assert "Failed" in p.stdout + p.stderr
    assert elapsed < 420, f"a dead MLflow server took {elapsed:.0f} s to fail the run"
    services.start_mlflow(home, ep)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == champion_before
    p = trigger(home, ep, "nightly-retrain/nightly", "preset=smoke", "n_generate=16", watch=True)
    assert p.returncode == 0, p.stdout + p.stderr


def engine_pid(flow_run_id: str) -> int | None:
    """The pid of the process the worker started for this flow run (read from /proc)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ:
            return int(proc.name)
    return None


def test_a_run_killed_by_sigkill_crashes_and_frees_the_concurrency_slot(served):
    home, ep = served
    p = trigger(home, ep, "nightly-retrain/nightly", "preset=smoke", "n_generate=16")
    assert p.returncode == 0, p.stdout + p.stderr
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", p.stdout).group(1)
    pid = wait_for(lambda: engine_pid(run_id), 300, "the flow run's process", every=1)
    os.kill(pid, signal.SIGKILL)

    def state():
        return {r["id"]: r["state_type"] for r in flow_runs(ep)}.get(run_id)

    # the worker sees its child die and marks the run Crashed, which releases the slot
    assert wait_for(lambda: state() in ("CRASHED", "FAILED") and state(), 120, "a crashed run")
    p = trigger(home, ep, "nightly-retrain/nightly", "preset=smoke", "n_generate=16", watch=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_cancelling_a_deployed_run_reaches_the_trainer_which_checkpoints(served):
    home, ep = served
    # the cpu preset trains for minutes and checkpoints only at the end, or on SIGTERM
    p = trigger(home, ep, "nightly-retrain/nightly", "preset=cpu", "n_generate=16")
    assert p.returncode == 0, p.stdout + p.stderr
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", p.stdout).group(1)
    pointer = wait_for(
        lambda: next(iter((home.runs / "active").glob("dcgan-*-cpu.json")), None),
        300,
        "the training run to start",
        every=1,
    )
    checkpoints = home.runs / json.loads(pointer.read_text())["run_id"] / "checkpoints"
    time.sleep(5)  # a few training steps
    assert not list(checkpoints.glob("ckpt-*"))
    p = prefect(home, ep, "flow-run", "cancel", flow_run_id)
    assert p.returncode == 0, p.stdout + p.stderr

    def state():
        return {r["id"]: r["state_type"] for r in flow_runs(ep)}.get(flow_run_id)

    final = wait_for(
        lambda: state() in ("CANCELLED", "FAILED", "CRASHED") and state(), 180, "the cancel"
    )
    assert final == "CANCELLED"
    # SIGTERM reached the trainer: it wrote a checkpoint to resume from, and left the run
    # marked unfinished so the next nightly run continues it
    assert list(checkpoints.glob("ckpt-*.pt"))
    assert pointer.exists()
