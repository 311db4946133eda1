"""Graceful stop on SIGTERM: the trainer checks a flag between steps, writes a checkpoint and
stops; the command then exits with EXIT_INTERRUPTED so a scheduler knows to run it again with
`--resume auto`.

Exit codes of `aigc train` and of `python -m aigc_core.training.launch`:
  0   finished
  75  stopped by SIGTERM (or SIGINT) after writing a checkpoint: resumable (EX_TEMPFAIL)
  3   stopped on a non-finite loss; the last good checkpoint is kept and named
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

_stop = threading.Event()


def stop_requested() -> bool:
    return _stop.is_set()


def request_stop() -> None:
    _stop.set()


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM,)) -> Iterator[None]:
    """Turn the signals into a stop request while the block runs. Handlers can only be set in
    the main thread; elsewhere this does nothing and says so (the caller's process, e.g. the
    CLI, should then install it)."""
    _stop.clear()
    if threading.current_thread() is not threading.main_thread():
        log.info("not in the main thread: SIGTERM handling is left to the caller")
        yield
        return

    def handler(signum, frame):
        log.warning("signal %d received: checkpointing and stopping", signum)
        _stop.set()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
