"""What the pipeline's own loggers show on the console when `-v` is not given.

Without `-v`, library logs stay hidden (Prefect's console handler is set to CRITICAL, MLflow to
WARNING, Python warnings are ignored). A warning that changes what happens (a corrupt checkpoint
skipped, a shard or a snapshot reused, a stale staging folder removed) must still reach the user:
`show_warnings` gives the project's loggers their own stderr handler at WARNING, one short line
per record (`warning: ...`), no timestamps and no tracebacks. Other loggers (prefect, mlflow,
great_expectations, ...) are left alone. With `-v` the handler is removed: the root handler shows
everything, once.
"""

from __future__ import annotations

import logging
import sys

# the project's packages: aigc_core logs what happens, the other layers what they decide
NAMESPACES = ("aigc", "aigc_core", "tasks", "flows", "data_contracts")


class _ShortFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


class WarningsToStderr(logging.Handler):
    """Writes to the current `sys.stderr` (Rich's live display and test runners replace it)."""

    terminator = "\n"

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(_ShortFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + self.terminator)
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def show_warnings(enabled: bool) -> None:
    """Give the project's loggers a stderr handler at WARNING (`enabled`), or remove it. Safe to
    call again. The loggers keep propagating, so pytest's caplog and a user's root handler still
    see their records; Prefect's own console handler (at CRITICAL without -v) shows none of them.
    """
    for name in NAMESPACES:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if isinstance(h, WarningsToStderr)]:
            logger.removeHandler(h)
        if enabled:
            logger.addHandler(WarningsToStderr())
