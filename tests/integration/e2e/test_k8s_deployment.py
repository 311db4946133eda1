"""The Kubernetes deployment (nightly-gpu) as `prefect deploy` makes it, against a throwaway
Prefect server on 127.0.0.1 with a kubernetes-type pool: no cluster is needed to create it.

It must be image-based (the pull step changes into the image's working directory, never into a
repository path the job does not have) and its environment complete: what the worker's
environment gives process runs (aigc/services.py), less what the Kubernetes worker adds itself
(the Prefect API URL and auth string) and the credentials, which come from a Secret.
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
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock

import pytest
from prefect.utilities.templating import apply_values

from aigc import services
from aigc_core.paths import Home

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[3]
DEPLOYMENTS = ROOT / "deployments"
TEMPLATE = DEPLOYMENTS / "k8s-base-job-template.json"
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL = "aigc-k8s"
DEPLOYMENT = "nightly-retrain/nightly-gpu"
IMAGE = "registry.example/aigc-pipeline:test"
MLFLOW_URI = "http://mlflow.aigc.svc:5000"
# set by the Kubernetes worker itself (its own API settings), or read from a Secret
NOT_IN_PREFECT_YAML = {
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
}
# where process runs and pods differ by design
PER_PLACE = {"AIGC_HOME", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "AIGC_REPO"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(environment for the prefect CLI, API URL) of a Prefect server started for this module
    in its own PREFECT_HOME; stopped (its process group) at the end, even on failure."""
    prefect_home = tmp_path_factory.mktemp("prefect-k8s")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))
    }
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    log = open(prefect_home / "server.log", "wb")  # noqa: SIM115 (the server's output)
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if get_json(f"{api}/health") is True:
                    break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            assert proc.poll() is None, (prefect_home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Prefect server did not answer in 180 s"
            time.sleep(1)
        yield env, api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    assert proc.poll() is not None


def prefect(env: dict, *args: str, extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PREFECT, *args],
        env={**env, **(extra or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def deploy(env: dict, **extra: str) -> subprocess.CompletedProcess:
    args = ["--no-prompt", "deploy", "--name", DEPLOYMENT]
    return prefect(env, *args, "--prefect-file", str(DEPLOYMENTS / "prefect.yaml"), extra=extra)


def read_deployment(api: str) -> dict | None:
    try:
        return get_json(f"{api}/deployments/name/{DEPLOYMENT}")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


@pytest.fixture(scope="module")
def pool(server):
    """The aigc-k8s pool, made from deployments/k8s-base-job-template.json as the README says."""
    env, api = server
    p = prefect(env, "work-pool", "create", POOL, "--type", "kubernetes", "--base-job-template",
                str(TEMPLATE))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    return get_json(f"{api}/work_pools/{POOL}")


def dockerfile(instruction: str) -> str:
    """The argument of the Dockerfile's (last) `instruction`, e.g. WORKDIR."""
    found = re.findall(rf"^{instruction}\s+(\S+)", (DEPLOYMENTS / "Dockerfile").read_text(), re.M)
    assert found, f"deployments/Dockerfile has no {instruction}"
    return found[-1]


def process_run_env() -> dict[str, str]:
    """What aigc/services.py gives the flow runs of the process worker (nothing inherited)."""
    home = Home(Path("/nonexistent-aigc-home"))
    ep = services.Endpoints.on(4200, 5000, mlflow_auth=True)
    secrets = services.Secrets(**services.Secrets.fresh())
    with (
        mock.patch.dict(os.environ, {}, clear=True),
        mock.patch.object(services, "read_secrets", return_value=secrets),
    ):
        return services.service_env(home, ep)


def test_a_kubernetes_pool_needs_no_prefect_kubernetes_and_our_template_extends_its_default(
    server, pool
):
    """`--type kubernetes` works offline without prefect-kubernetes (the server's bundled
    collection registry gives the worker's default template); ours keeps every default
    variable and adds the GPU, the home's volume and the Secret."""
    env, api = server
    p = prefect(env, "work-pool", "create", "k8s-default", "--type", "kubernetes")
    assert p.returncode == 0, p.stdout + p.stderr
    default = get_json(f"{api}/work_pools/k8s-default")["base_job_template"]
    ours = pool["base_job_template"]
    assert pool["type"] == "kubernetes"
    assert set(default["variables"]["properties"]) <= set(ours["variables"]["properties"])
    added = set(ours["variables"]["properties"]) - set(default["variables"]["properties"])
    assert added == {"gpu_limit", "home_claim", "home_path", "env_secret"}
    assert set(default["job_configuration"]) == set(ours["job_configuration"])


def test_deploy_refuses_without_the_image_or_the_tracking_server(server, pool):
    env, api = server
    before = read_deployment(api)
    for missing in ("AIGC_IMAGE", "AIGC_K8S_MLFLOW_URI"):
        given = {"AIGC_IMAGE": IMAGE, "AIGC_K8S_MLFLOW_URI": MLFLOW_URI, missing: ""}
        p = deploy(env, **given)
        assert p.returncode != 0
        assert "nightly-gpu needs AIGC_IMAGE" in p.stdout + p.stderr, p.stdout + p.stderr
    assert read_deployment(api) == before  # nothing created or changed


def test_nightly_gpu_is_image_based_with_a_complete_environment(server, pool):
    env, api = server
    p = deploy(env, AIGC_IMAGE=IMAGE, AIGC_K8S_MLFLOW_URI=MLFLOW_URI, AIGC_REPO="/somewhere")
    assert p.returncode == 0, p.stdout + p.stderr
    d = read_deployment(api)
    assert d is not None and d["work_pool_name"] == POOL

    # image-based: the pull step changes into the image's WORKDIR, nothing names a repository
    workdir = dockerfile("WORKDIR")
    assert d["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": workdir}}
    ]
    assert "AIGC_REPO" not in json.dumps(d) and "/somewhere" not in json.dumps(d)

    # the environment: everything process runs get, with the values that do not depend on place
    jv = d["job_variables"]
    assert jv["image"] == IMAGE
    run_env = jv["env"]
    expected = process_run_env()
    missing = set(expected) - NOT_IN_PREFECT_YAML - {"AIGC_REPO"} - set(run_env)
    assert not missing, f"nightly-gpu's env lacks {sorted(missing)} (see aigc/services.py)"
    loggers = "PREFECT_LOGGING_EXTRA_LOGGERS"  # a list: its order does not matter
    for k in set(expected) - NOT_IN_PREFECT_YAML - PER_PLACE - {loggers}:
        assert run_env[k] == expected[k], k
    assert set(run_env[loggers].split(",")) == {"aigc_core", "tasks", "flows", "data_contracts"}
    assert set(run_env[loggers].split(",")) == set(expected[loggers].split(","))
    assert run_env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "false"
    assert run_env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    assert run_env["MLFLOW_TRACKING_URI"] == MLFLOW_URI
    assert not NOT_IN_PREFECT_YAML & set(run_env)  # never credentials in the deployment

    # the Job the pool's template renders from these variables (as the worker does)
    template = pool["base_job_template"]
    defaults = {
        k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v
    }
    job = apply_values(template["job_configuration"], {**defaults, **jv})["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["mountPath"] == run_env["AIGC_HOME"] and mount["name"] == volume["name"]
    assert run_env["PREFECT_HOME"].startswith(run_env["AIGC_HOME"] + "/")
    assert volume["persistentVolumeClaim"]["claimName"] == jv["home_claim"]
    assert container["envFrom"] == [{"secretRef": {"name": "aigc-env", "optional": True}}]
    assert pod["securityContext"]["fsGroup"] == int(dockerfile("USER"))
