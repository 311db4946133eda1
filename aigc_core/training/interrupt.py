"""Graceful stop on SIGTERM or SIGINT (Ctrl-C): the trainer checks a flag between steps, writes
a checkpoint and stops; the command then exits with EXIT_INTERRUPTED so a scheduler knows to run
it again with `--resume auto`. A signal that arrives before training has started (during the
command's start-up) stops it before anything is written: a clean no-op, with the same exit code.

Exit codes of `aigc train` and of `python -m aigc_core.training.launch`:
  0   finished
  75  stopped by SIGTERM or SIGINT, after writing a checkpoint or before writing anything:
      resumable (EX_TEMPFAIL)
  3   stopped on a non-finite loss; the last good checkpoint is kept and named

Blocks nest: the command installs the handler first thing, and the task layer's own block inside
it neither clears a stop requested during start-up nor drops the handler when it ends. Only the
outermost block starts with a cleared flag. While the command only imports and checks its input
(`abort_on_signals`), a signal ends it at once instead (StopRequested). A second Ctrl-C aborts at
once (KeyboardInterrupt), without waiting for the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 75
EXIT_NONFINITE = 3
SIGNALS = (signal.SIGTERM, signal.SIGINT)

_stop = threading.Event()
_lock = threading.Lock()
_depth = 0  # stop_on_signals blocks open in this process
_abort = False  # inside abort_on_signals: the handler raises StopRequested


class StopRequested(BaseException):
    """Raised by the signal handler itself inside `abort_on_signals`. A BaseException, like
    KeyboardInterrupt, so that no library's `except Exception` swallows it."""

    def __init__(self, message: str = "stopped by a signal"):
        super().__init__(message)


def stop_requested() -> bool:
    return _stop.is_set()


def request_stop() -> None:
    _stop.set()


def _handler(signum, frame) -> None:
    if signum == signal.SIGINT and _stop.is_set():
        raise KeyboardInterrupt  # a second Ctrl-C: stop now, no checkpoint
    _stop.set()
    hint = "; Ctrl-C again aborts without one" if signum == signal.SIGINT else ""
    log.warning(
        "%s received: stopping (with a checkpoint if training has started%s)",
        signal.Signals(signum).name,
        hint,
    )
    if _abort:
        raise StopRequested


@contextlib.contextmanager
def stop_on_signals(signals=SIGNALS) -> Iterator[None]:
    """Turn the signals into a stop request while the block runs.

    The outermost block clears the flag when it starts; a nested one keeps it, so a signal
    received before the inner block (during start-up) still stops the run. Handlers can only be
    set in the main thread; elsewhere this installs nothing and says so (the caller's process,
    e.g. the CLI, should then install it)."""
    global _depth, _abort
    with _lock:
        if _depth == 0:
            _stop.clear()
        _depth += 1
        outer_abort, _abort = _abort, False  # in here the work polls the flag: never abort
    try:
        if threading.current_thread() is not threading.main_thread():
            log.info("not in the main thread: signal handling is left to the caller")
            yield
        else:
            previous = {s: signal.signal(s, _handler) for s in signals}
            try:
                yield
            finally:
                for s, h in previous.items():
                    signal.signal(s, signal.SIG_DFL if h is None else h)  # None: not Python's
    finally:
        with _lock:
            _depth -= 1
            _abort = outer_abort
    if _abort and _stop.is_set():  # back in an abort_on_signals block with a stop pending
        raise StopRequested("stopped by a signal between stages")


@contextlib.contextmanager
def abort_on_signals() -> Iterator[None]:
    """Inside a `stop_on_signals` block, for work that is safe to cut short anywhere (start-up
    that writes nothing, e.g. importing torch, Prefect and MLflow; idempotent pipeline stages): a
    signal raises StopRequested at once rather than waiting for a step boundary, and so does
    entering with a stop already requested. A `stop_on_signals` block nested inside (training)
    polls the flag instead, and a stop it did not act on is raised when it ends."""
    global _abort
    if _stop.is_set():
        raise StopRequested
    _abort = True
    try:
        yield
    finally:
        _abort = False
