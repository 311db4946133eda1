"""How a flow run reads in the Prefect UI: a name made of its parameters, and tags to filter by.

A run is called e.g. `nightly-dcgan-digits-2026-12-01` instead of a random "astonishing-shark",
and tagged `family:dcgan`, `dataset:digits`, `preset:cpu`. The tags are added by the run itself,
so runs started from the CLI, a schedule or `prefect deployment run` get the same ones.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime

from prefect.runtime import flow_run

from aigc_core import provenance

log = logging.getLogger(__name__)


# The project's loggers, which PREFECT_LOGGING_EXTRA_LOGGERS (set by the CLI and the worker's
# environment) forwards to each flow run's log. Python's root level (WARNING) would drop their
# INFO records before any handler saw them, so they log at INFO unless configured otherwise.
def log_project_info() -> None:
    for name in provenance.PACKAGES:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


log_project_info()

_UNSAFE = re.compile(r"[^A-Za-z0-9._@/-]+")


def _part(value: object, limit: int = 48) -> str:
    """One parameter as a name part: no spaces or odd characters, not too long."""
    text = _UNSAFE.sub("-", str(value)).strip("-")
    return text[:limit] or "none"


def name_from(template: str, **defaults: object) -> Callable[[], str]:
    """A `flow_run_name` callable: `template` filled with the run's parameters (`defaults` for
    those left out) and `{date}`, the UTC day the run starts."""

    def name() -> str:
        params = {**defaults, **(flow_run.parameters or {})}
        values = {k: _part(v) for k, v in params.items()}
        values["date"] = datetime.now(UTC).date().isoformat()
        return template.format_map(_Missing(values))

    return name


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "none"


def add_tags(**tags: object) -> list[str]:
    """Add `key:value` tags to the current flow run (values None are left out); returns them.
    A run outside a Prefect flow, or an API error, changes nothing: tags only help reading."""
    new = [f"{k}:{_part(v)}" for k, v in tags.items() if v is not None]
    run_id = flow_run.get_id()
    if not run_id:
        return new
    try:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            current = client.read_flow_run(run_id).tags or []
            client.update_flow_run(run_id, tags=sorted(set(current) | set(new)))
    except Exception as e:  # noqa: BLE001 - cosmetic: never fail a run for its tags
        log.warning("could not tag flow run %s: %s", run_id, e)
    return new
