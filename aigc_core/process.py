"""Which process owns a file, and whether it still runs: one answer for every marker the
pipeline leaves while it works (staging folders, active-run pointers).

An owner is (pid, start time, host): the start time (Linux: clock ticks since boot, field 22 of
/proc/PID/stat) tells a process from a later one given the same pid, and the host (a short hash
of its name) keeps a shared home's markers from being judged on another machine.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path


def host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (Linux): [state, ppid, ...], or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def start_time(pid: int) -> int:
    """When `pid` started, in clock ticks since boot (Linux), or 0 where that is unknown."""
    stat = _proc_stat(pid)
    return int(stat[19]) if stat and len(stat) > 19 else 0


@dataclass(frozen=True)
class Owner:
    pid: int
    start: int  # 0: unknown
    host: str

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, start_time(pid), host_id())

    def alive(self) -> bool:
        """Whether the owner still runs. Another host's owner counts as alive (it cannot be
        checked from here), and so does one that cannot be checked: when in doubt, a live
        writer's marker must never be taken over."""
        if self.host != host_id() or self.pid <= 0:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except OSError:  # e.g. EPERM: another user's process
            pass
        stat = _proc_stat(self.pid)
        if stat is None:
            return True
        if stat[0] in ("Z", "X"):  # killed, not yet reaped by its parent
            return False
        return not (self.start and len(stat) > 19 and int(stat[19]) != self.start)  # pid reused
