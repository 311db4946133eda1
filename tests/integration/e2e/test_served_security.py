"""The served mode's secrets, without servers: how `aigc up` creates, keeps and hands them out.

The servers' side (a forged cross-origin request refused, MLflow's Host and Origin checks, its
basic auth) is tested against real servers in test_served.py.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from aigc import services
from aigc_core.paths import Home


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home").ensure()


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_secrets_are_created_private_once_and_reused(home):
    first = services.ensure_secrets(home)
    assert mode(services.state_dir(home)) == 0o700
    assert mode(services.secrets_file(home)) == 0o600
    assert first.prefect_auth_string.startswith("aigc:") and len(first.prefect_auth_string) > 40
    assert (
        len({first.prefect_auth_string, first.mlflow_password, first.mlflow_flask_secret_key}) == 3
    )
    assert services.ensure_secrets(home) == first
    assert services.read_secrets(home) == first


def test_concurrent_ups_agree_on_one_set_of_secrets(home):
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: services.ensure_secrets(home), range(16)))
    assert len(set(got)) == 1
    assert [p.name for p in services.state_dir(home).iterdir()] == ["secrets.json"]  # no temps


def test_a_secrets_file_others_can_read_is_refused(home):
    services.ensure_secrets(home)
    services.secrets_file(home).chmod(0o644)
    with pytest.raises(services.ServiceError, match="mode 0600"):
        services.ensure_secrets(home)
    with pytest.raises(services.ServiceError, match="mode 0600"):
        services.read_secrets(home)


def test_an_older_secrets_file_is_completed_and_keeps_its_values(home):
    services.state_dir(home).mkdir(mode=0o700, exist_ok=True)
    f = services.secrets_file(home)
    f.write_text('{"prefect_auth_string": "aigc:kept"}')
    f.chmod(0o600)
    with pytest.raises(services.ServiceError, match="mlflow_password"):
        services.read_secrets(home)
    s = services.ensure_secrets(home)
    assert s.prefect_auth_string == "aigc:kept" and s.mlflow_password
    assert mode(f) == 0o600


def test_clients_get_the_credentials_and_the_server_its_closed_settings(home, monkeypatch):
    s = services.ensure_secrets(home)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "the user's own")
    monkeypatch.setenv("MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE", "true")
    monkeypatch.setenv("PREFECT_SERVER_CORS_ALLOWED_ORIGINS", "*")
    ep = services.Endpoints.on(4321, 5432)
    env = services.service_env(home, ep)
    assert env["PREFECT_API_AUTH_STRING"] == s.prefect_auth_string
    assert "MLFLOW_TRACKING_PASSWORD" not in env
    assert "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE" not in env
    server = services.prefect_server_env(home, ep)
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == s.prefect_auth_string
    assert server["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4321"
    assert server["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"

    with_auth = services.service_env(home, services.Endpoints.on(4321, 5432, mlflow_auth=True))
    assert with_auth["MLFLOW_TRACKING_USERNAME"] == services.MLFLOW_ADMIN
    assert with_auth["MLFLOW_TRACKING_PASSWORD"] == s.mlflow_password


@pytest.mark.parametrize("mlflow_auth", [False, True])
def test_env_sh_is_private_and_sourcing_it_sets_the_credentials(home, mlflow_auth):
    s = services.ensure_secrets(home)
    ep = services.Endpoints.on(4321, 5432, mlflow_auth=mlflow_auth)
    f = services.write_env_file(home, ep)
    assert mode(f) == 0o600
    p = subprocess.run(
        [
            "bash",
            "-c",
            f"source {f} && echo $PREFECT_API_URL $PREFECT_API_AUTH_STRING $MLFLOW_TRACKING_URI"
            " ${MLFLOW_TRACKING_USERNAME:-none} ${MLFLOW_TRACKING_PASSWORD:-none}",
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))},
        capture_output=True,
        text=True,
        check=True,
    )
    user, password = (services.MLFLOW_ADMIN, s.mlflow_password) if mlflow_auth else ("none",) * 2
    assert p.stdout.split() == [
        ep.prefect_api_url,
        s.prefect_auth_string,
        ep.mlflow_url,
        user,
        password,
    ]


def test_the_mlflow_auth_config_keeps_its_database_in_the_home_and_no_password(home):
    s = services.ensure_secrets(home)
    text = services.mlflow_auth_config(home).read_text()
    assert f"database_uri = sqlite:///{services.state_dir(home) / 'mlflow-auth.db'}" in text
    assert "default_permission = NO_PERMISSIONS" in text
    assert s.mlflow_password not in text and "password1234" not in text
