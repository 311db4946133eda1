"""`aigc up`, `aigc down`, `aigc deploy`, `aigc status`: the served mode's commands."""

from __future__ import annotations

import json
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
    as_json: bool = typer.Option(False, "--json", help="Print the endpoints as JSON."),
) -> None:
    """Start a Prefect server, a worker on the aigc-process pool and an MLflow server, all on
    127.0.0.1, and wait until they answer."""
    from aigc import services

    h = Home.resolve(home)
    try:
        with err.status("starting Prefect server, MLflow server and worker...", spinner="dots"):
            ep = services.up(h, prefect_port, mlflow_port)
    except services.ServiceError as e:
        raise _fail(str(e)) from None
    if as_json:
        print(json.dumps(ep.__dict__))
        return
    table = Table(title="aigc up", show_header=False)
    table.add_row("Prefect UI", ep.prefect_ui_url)
    table.add_row("Prefect API", ep.prefect_api_url)
    table.add_row("MLflow", ep.mlflow_url)
    table.add_row("worker pool", services.POOL)
    table.add_row("logs", str(services.state_dir(h)))
    out.print(table)
    out.print(f"export PREFECT_API_URL={ep.prefect_api_url} MLFLOW_TRACKING_URI={ep.mlflow_url}")


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
