"""Served mode end to end: real Prefect and MLflow servers and a worker on 127.0.0.1.

`aigc up` starts them, `aigc deploy` registers the deployments, and runs are triggered with
`prefect deployment run`, as a user would. Services are stopped at the end, even on failure.
The servers are closed to anyone without the home's credentials, a web page in the user's
browser included (the first tests); the deployment runs go through with them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
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


NOTICES: list[dict] = []  # what the served mode's failure webhook received


@pytest.fixture(scope="module")
def webhook():
    """A local webhook receiver for failure notices (`aigc up --notify URL`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            NOTICES.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/notices"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, webhook):
    home = Home(tmp_path_factory.mktemp("served")).ensure()
    try:
        ep = services.up(home, free_port(), free_port(), timeout=180, notify=webhook)
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


def http(method: str, url: str, headers: dict | None = None, body=None):
    """(status, lower-cased headers, body) of one request; error statuses are answers too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def basic(credentials: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def prefect_api(home, ep, method: str, path: str, body=None):
    """An authenticated Prefect API call, with a CSRF token on writes (as the UI makes it)."""
    headers = {**basic(services.read_secrets(home).prefect_auth_string)}
    headers["Content-Type"] = "application/json"
    if method != "GET":
        client = str(uuid.uuid4())
        status, _, token = http("GET", f"{ep.prefect_api_url}/csrf-token?client={client}", headers)
        assert status == 200, token
        headers["Prefect-Csrf-Token"] = json.loads(token)["token"]
        headers["Prefect-Csrf-Client"] = client
    status, _, data = http(method, ep.prefect_api_url + path, headers, body)
    return status, json.loads(data) if data else None


def flow_runs(home, ep) -> list[dict]:
    """The top-level flow runs (deployment runs), read from the Prefect REST API; their
    subflow runs (each nightly run's content-batch) are left out."""
    status, runs = prefect_api(home, ep, "POST", "/flow_runs/filter", {"limit": 200})
    assert status == 200, runs
    return [r for r in runs if r.get("parent_task_run_id") is None]


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


EVIL = "http://evil.example"


def assert_refused(answer, what: str) -> None:
    status, headers, body = answer
    assert status in (401, 403), f"{what} was let in: {status} {body[:200]!r}"
    assert headers.get("access-control-allow-origin") not in ("*", EVIL), (what, headers)


def test_served_mode_refuses_a_forged_cross_origin_request(served, tmp_path):
    """Issue 13: a web page in the user's browser could POST a flow, a deployment whose pull
    step runs a shell script, and a flow run of it, to the unauthenticated Prefect API."""
    home, ep = served
    api = ep.prefect_api_url
    forged = {"Origin": EVIL, "Content-Type": "application/json"}
    runs_before = {r["id"] for r in flow_runs(home, ep)}
    status, nightly = prefect_api(home, ep, "GET", "/deployments/name/nightly-retrain/nightly")
    assert status == 200, nightly
    marker = tmp_path / "pwned"
    deployment = {
        "name": "pwn",
        "flow_id": nightly["flow_id"],
        "work_pool_name": services.POOL,
        "pull_steps": [
            {"prefect.deployments.steps.run_shell_script": {"script": f"touch {marker}"}}
        ],
    }

    # the request, then the rest of the attack, each as a page would send it, and
    # with a made-up CSRF token or a wrong auth string
    attempts = {
        "POST /flows/": ("/flows/", {"name": "p"}),
        "POST /deployments/": ("/deployments/", deployment),
        "POST create_flow_run": (f"/deployments/{nightly['id']}/create_flow_run", {}),
    }
    for what, (path, body) in attempts.items():
        assert_refused(http("POST", api + path, forged, body), what)
        wrong = {**forged, **basic("aigc:guessed")}
        status, _, _ = http("POST", api + path, wrong, body)
        assert status in (401, 403), what
        made_up = {**forged, "Prefect-Csrf-Token": "x", "Prefect-Csrf-Client": "evil"}
        status, _, _ = http("POST", api + path, made_up, body)
        assert status in (401, 403), what
    # without credentials there is no CSRF token to be had either
    assert_refused(http("GET", f"{api}/csrf-token?client=evil", {"Origin": EVIL}), "csrf-token")
    # a browser asks first (content-type JSON is not a simple request): CORS says no
    status, headers, _ = http(
        "OPTIONS",
        f"{api}/flows/",
        {
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert status == 400 and "access-control-allow-origin" not in headers, (status, headers)

    # nothing was created: no flow, no deployment, no flow run (the scheduler's own runs of
    # the nightly cron aside), and the script never ran
    assert prefect_api(home, ep, "GET", "/flows/name/p")[0] == 404
    status, deployments = prefect_api(home, ep, "POST", "/deployments/filter", {"limit": 200})
    assert status == 200 and "pwn" not in {d["name"] for d in deployments}
    new_runs = [
        r for r in flow_runs(home, ep) if r["id"] not in runs_before and not r.get("auto_scheduled")
    ]
    assert new_runs == []
    assert not marker.exists()


def test_served_mode_lets_its_own_ui_and_clients_in(served):
    home, ep = served
    api = ep.prefect_api_url
    # the UI is told to ask for the auth string and to send CSRF tokens
    status, _, body = http("GET", f"{ep.prefect_ui_url}/ui-settings")
    settings = json.loads(body)
    assert status == 200 and settings["auth"] == "BASIC" and settings["csrf_enabled"]
    # its origin passes CORS, and its credentialed write goes through
    own = {
        "Origin": ep.prefect_ui_url,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization,prefect-csrf-token",
    }
    status, headers, _ = http("OPTIONS", f"{api}/flows/filter", own)
    assert status == 200 and headers["access-control-allow-origin"] == ep.prefect_ui_url
    assert prefect_api(home, ep, "POST", "/flows/filter", {"limit": 1})[0] == 200

    # the secrets are the owner's only, and a second `aigc up` keeps them
    folder = services.state_dir(home)
    assert folder.stat().st_mode & 0o777 == 0o700
    for f in (services.secrets_file(home), services.env_file(home)):
        assert f.stat().st_mode & 0o777 == 0o600, f
    before = services.read_secrets(home)
    prefect_port = int(ep.prefect_ui_url.rsplit(":", 1)[1])
    assert services.up(home, prefect_port, ep.mlflow_port) == ep
    assert services.read_secrets(home) == before

    # `source env.sh` is all a shell needs for `prefect deployment run` and friends
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    clean["PREFECT_HOME"] = str(home.prefect_home)
    inspect = f"{BIN / 'prefect'} work-pool inspect {services.POOL}"
    p = subprocess.run(
        ["bash", "-c", f"source {services.env_file(home)} && {inspect}"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home.root,
    )
    assert p.returncode == 0 and services.POOL in p.stdout, p.stdout + p.stderr
    # and without it, the CLI is refused
    p = subprocess.run(
        [str(BIN / "prefect"), "work-pool", "inspect", services.POOL],
        env={**clean, "PREFECT_API_URL": api},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home.root,
    )
    assert p.returncode != 0 and "401" in p.stdout + p.stderr


def test_the_mlflow_server_refuses_foreign_hosts_and_origins(served):
    home, ep = served
    search = f"{ep.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    create = f"{ep.mlflow_url}/api/2.0/mlflow/experiments/create"
    json_body = {"Content-Type": "application/json"}
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host
    for host in ("evil.example", f"evil.example:{ep.mlflow_port}", f"10.0.0.1:{ep.mlflow_port}"):
        status, _, _ = http("GET", search, {"Host": host})
        assert status == 403, host
        status, _, _ = http("POST", create, {**json_body, "Host": host}, {"name": "pwn"})
        assert status == 403, host
    # a cross-origin write from a page
    assert_refused(http("POST", create, {**json_body, "Origin": EVIL}, {"name": "pwn"}), "create")
    assert mlflow_client(ep).get_experiment_by_name("pwn") is None
    assert http("GET", search)[0] == 200  # our own clients still read


def test_aigc_deploy_registers_every_local_deployment(served):
    home, ep = served
    status, deployments = prefect_api(home, ep, "POST", "/deployments/filter", {"limit": 50})
    assert status == 200, deployments
    status, flows = prefect_api(home, ep, "POST", "/flows/filter", {"limit": 50})
    flow_names = {f["id"]: f["name"] for f in flows}
    found = {f"{flow_names[d['flow_id']]}/{d['name']}" for d in deployments}
    assert set(services.LOCAL_DEPLOYMENTS) <= found, found


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
    # the served night reads well: named and tagged, linked to the MLflow server's pages
    night = next(r for r in flow_runs(home, ep) if r["name"].startswith("nightly-dcgan-digits-"))
    assert {"family:dcgan", "dataset:digits", "preset:smoke"} <= set(night["tags"])
    status, artifacts = prefect_api(
        home,
        ep,
        "POST",
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [night["id"]]}}},
    )
    assert status == 200
    links = {a["key"]: a["data"] for a in artifacts if a.get("key")}
    for key in ("mlflow-pipeline-run", "mlflow-training-run", "registered-version"):
        assert f"{ep.mlflow_url}/#/" in links[key], links
    assert "/#/experiments/" in links["mlflow-training-run"]
    report = (batches[0] / "report.html").read_text()
    assert f'href="{ep.mlflow_url}/#/experiments/' in report

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


def test_the_cli_with_the_served_mlflow_prints_exactly_one_json_object(served):
    """MLflow prints "View run ... at: URL" to stdout when a run on a server ends; `--json`
    output must stay one JSON object."""
    home, ep = served
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= services.client_env(home, ep)
    p = subprocess.run(
        [sys.executable, "-m", "aigc", "generate", "--model", f"{MODEL}@champion", "--n", "4"]
        + ["--json", "--home", str(home.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["n_generated"] == 4, p.stdout


def test_four_triggers_run_one_at_a_time_and_none_is_lost(served):
    home, ep = served
    before = {r["id"] for r in flow_runs(home, ep)}
    for _ in range(4):  # forced: the same night again would otherwise train nothing
        p = trigger(
            home, ep, "nightly-retrain/nightly", "preset=smoke", "n_generate=16", "force=true"
        )
        assert p.returncode == 0, p.stdout + p.stderr

    def new_runs():
        return [r for r in flow_runs(home, ep) if r["id"] not in before]

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
    # the worker's run sent its failure notice through the block `aigc up --notify` saved
    failed = [n for n in NOTICES if n["subject"].startswith("aigc: flow run nightly-dcgan-digits-")]
    assert failed and failed[-1]["subject"].endswith("failed"), NOTICES
    assert "/runs/flow-run/" in failed[-1]["text"]
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
        return {r["id"]: r["state_type"] for r in flow_runs(home, ep)}.get(run_id)

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
        return {r["id"]: r["state_type"] for r in flow_runs(home, ep)}.get(flow_run_id)

    final = wait_for(
        lambda: state() in ("CANCELLED", "FAILED", "CRASHED") and state(), 180, "the cancel"
    )
    assert final == "CANCELLED"
    # SIGTERM reached the trainer: it wrote a checkpoint to resume from, and left the run
    # marked unfinished so the next nightly run continues it
    assert list(checkpoints.glob("ckpt-*.pt"))
    assert pointer.exists()


def test_mlflow_auth_refuses_anonymous_requests_and_lets_the_client_in(tmp_path, monkeypatch):
    """`aigc up --mlflow-auth`: MLflow's basic-auth app, its admin password generated (never
    MLflow's old default) and its user database under the home's services folder."""
    home = Home(tmp_path / "home").ensure()
    ep = services.Endpoints.on(free_port(), free_port(), mlflow_auth=True)
    secrets = services.ensure_secrets(home)
    try:
        services.start_mlflow(home, ep, timeout=180)
        create = f"{ep.mlflow_url}/api/2.0/mlflow/experiments/create"
        search = f"{ep.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
        json_body = {"Content-Type": "application/json"}
        assert http("GET", search)[0] == 401
        assert http("POST", create, json_body, {"name": "anon"})[0] == 401
        # MLflow's old default admin, and a wrong password for ours (each check costs a hash)
        for creds in ("admin:password1234", f"{services.MLFLOW_ADMIN}:password1234"):
            assert http("POST", create, {**json_body, **basic(creds)}, {"name": "anon"})[0] == 401
        # the clients' credentials come from service_env, as the worker's flow runs get them
        env = services.service_env(home, ep)
        assert env["MLFLOW_TRACKING_USERNAME"] == services.MLFLOW_ADMIN
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env["MLFLOW_TRACKING_USERNAME"])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_TRACKING_PASSWORD"])
        client = mlflow_client(ep)
        client.get_experiment(client.create_experiment("with-credentials"))
        assert client.get_experiment_by_name("anon") is None
        # still refused from a foreign origin, credentials or not
        admin = basic(f"{services.MLFLOW_ADMIN}:{secrets.mlflow_password}")
        status, _, _ = http("POST", create, {**json_body, **admin, "Origin": EVIL}, {"name": "x"})
        assert status == 403
        db = services.state_dir(home) / "mlflow-auth.db"
        assert db.exists() and not (home.root / "basic_auth.db").exists()
        assert secrets.mlflow_password not in services.mlflow_auth_config(home).read_text()
    finally:
        services.stop(home, "mlflow")
