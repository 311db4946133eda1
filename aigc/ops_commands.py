"""`aigc up`, `aigc down`, `aigc deploy`, `aigc status`: the served mode's commands."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer
from rich.table import Table

from aigc.cli import _fail, app, err, out
from aigc_core.paths import Home

HOME_OPTION = typer.Option(None, envvar="AIGC_HOME", help="The aigc home (default ./.aigc).")


@app.command()
def up(
    prefect_port: int = typer.Option(4200, help="Port of the Prefect server on 127.0.0.1."),
    mlflow_port: int = typer.Option(5000, help="Port of the MLflow server on 127.0.0.1."),
    home: Path = HOME_OPTION,
    mlflow_auth: bool = typer.Option(
        False,
        "--mlflow-auth",
        help="Require a user and password on the MLflow server too (MLflow's basic-auth app).",
    ),
    notify: str = typer.Option(
        None,
        help="Where failed or crashed flow runs are reported: a webhook URL (saved as a Prefect "
        "notification block, aigc-notify) or an existing block's slug, e.g. slack-webhook/ops.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the endpoints as JSON."),
) -> None:
    """Start a Prefect server, a worker on the aigc-process pool and an MLflow server, all on
    127.0.0.1, and wait until they answer. The Prefect API needs the auth string that this
    creates in <home>/services/secrets.json; `source <home>/services/env.sh` sets it in a
    shell."""
    from aigc import services

    h = Home.resolve(home)
    try:
        with err.status("starting Prefect server, MLflow server and worker...", spinner="dots"):
            ep = services.up(h, prefect_port, mlflow_port, mlflow_auth=mlflow_auth, notify=notify)
    except services.ServiceError as e:
        raise _fail(str(e)) from None
    env_file = services.env_file(h)
    if as_json:
        print(json.dumps({**ep.__dict__, "env_file": str(env_file)}))
        return
    table = Table(title="aigc up", show_header=False)
    table.add_row("Prefect UI", f"{ep.prefect_ui_url} (password: PREFECT_API_AUTH_STRING)")
    table.add_row("Prefect API", ep.prefect_api_url)
    auth = f" (user {services.MLFLOW_ADMIN}: MLFLOW_TRACKING_PASSWORD)" if ep.mlflow_auth else ""
    table.add_row("MLflow", ep.mlflow_url + auth)
    table.add_row("worker pool", services.POOL)
    table.add_row("logs", str(services.state_dir(h)))
    table.add_row("credentials", f"{env_file} (mode 0600)")
    out.print(table)
    # the secrets stay in the file, out of the terminal's scrollback and the shell's history
    out.print(f"source {shlex.quote(str(env_file))}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def down(home: Path = HOME_OPTION) -> None:
    """Stop the worker, the MLflow server and the Prefect server started by `aigc up`."""
    from aigc import services

    stopped = services.down(Home.resolve(home))
    for name, was in stopped.items():
        err.print(f"{name}: {'stopped' if was else 'was not running'}")


@app.command()
def deploy(home: Path = HOME_OPTION) -> None:
    """Register the deployments of deployments/prefect.yaml with the running Prefect server."""
    from aigc import services

    try:
        with err.status("deploying...", spinner="dots"):
            services.deploy(Home.resolve(home))
    except services.ServiceError as e:
        raise _fail(str(e)) from None
    err.print(f"deployed to pool {services.POOL}: {', '.join(services.LOCAL_DEPLOYMENTS)}")


@app.command()
def status(home: Path = HOME_OPTION) -> None:
    """Which services of `aigc up` are running."""
    from aigc import services

    h = Home.resolve(home)
    table = Table(title="aigc services")
    table.add_column("service")
    table.add_column("state")
    for name, alive in services.status(h).items():
        table.add_row(name, "[green]running[/]" if alive else "[dim]stopped[/]")
    out.print(table)
