"""Atomic publication of files and directories: nothing half-written ever sits at a final path.

A directory is built under a hidden staging name next to its final place, every file is fsynced,
and one `os.rename` publishes it. A file is written to a temporary name, fsynced and
`os.replace`d. Readers therefore see either nothing or the complete result.

A staging directory's name records its owner (pid, the process's start time, a hash of the host
name), so the next `staged_dir` in the same place removes the ones whose writer is gone (killed
with SIGKILL, a power cut) and leaves live writers alone. A write that runs out of space raises
`DiskFullError`, which names the path and the space it needed, after removing what it staged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from aigc_core.process import Owner, host_id, start_time

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
# .staging-<final name>-p<pid>-s<start time>-h<host hash>-<random>
_OWNER = re.compile(r"-p(?P<pid>\d+)-s(?P<start>\d+)-h(?P<host>[0-9a-f]{8})-[0-9a-f]{8}$")
LEGACY_STAGING_AGE_S = 24 * 3600  # staging without an owner (older versions): stale after this
_FULL = (errno.ENOSPC, errno.EDQUOT)
_TOO_LARGE = errno.EFBIG  # the file size limit (ulimit -f) or the filesystem's largest file
_TEXT_ERRNO = {
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "file too large": errno.EFBIG,
}
_FULL_TEXT = re.compile("|".join([*_TEXT_ERRNO, r"(?:errno|os error) (\d+)"]), re.I)


class DiskFullError(OSError):
    """A write ran out of space (ENOSPC, EDQUOT) or hit the largest file allowed (EFBIG). `errno`
    is the original one; the message names the path and the space it needed."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _full_disk_errno(exc: BaseException) -> int | None:
    """ENOSPC, EDQUOT or EFBIG when `exc` (or what caused it) is a full disk, else None. Torch and
    safetensors wrap the OSError in their own errors, so their messages are read too."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (*_FULL, _TOO_LARGE):
            return exc.errno
        for m in _FULL_TEXT.finditer(str(exc)):
            code = int(m.group(1)) if m.group(1) else _TEXT_ERRNO[m.group(0).lower()]
            if code in (*_FULL, _TOO_LARGE):
                return code
        exc = exc.__cause__ or exc.__context__
    return None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def disk_full_error(
    path: Path,
    exc: BaseException,
    *,
    need: int | None = None,
    estimate: bool = False,
    written: int | None = None,
) -> DiskFullError | None:
    """A DiskFullError for a failed write of `path` when `exc` is a full disk, else None. `need`:
    the bytes the write needed, when known (`estimate`: roughly); `written`: the bytes written
    before it failed. The free space is measured now: call it once the partial output is gone."""
    code = _full_disk_errno(exc)
    if code is None:
        return None
    path = Path(path)
    free = _free_bytes(path.parent)
    sizes = [f"{'about ' if estimate else ''}{_size(need)} to write" if need else None]
    sizes.append(f"{_size(written)} written before it failed" if written else None)
    sizes.append(f"{_size(free)} free there" if free is not None else None)
    what = ", ".join(s for s in sizes if s)
    if code == _TOO_LARGE:
        fix = "the file size limit (ulimit -f) or the filesystem's largest file was reached"
    else:
        fix = "free some space there or point AIGC_HOME at a larger disk"
    message = f"cannot write {path}: {os.strerror(code)} ({what}); {fix}"
    return DiskFullError(code, message, str(path))


@contextlib.contextmanager
def naming_full_disk(path: Path, need: int | None = None) -> Iterator[None]:
    """Re-raise a full disk inside the block as a DiskFullError naming `path` and `need` bytes."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        full = disk_full_error(path, e, need=need)
        if full is None:
            raise
        raise full from e


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with naming_full_disk(path, need=len(data)):  # said once the partial file is removed
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def staged_dir(final: Path, size_hint: int | None = None) -> Iterator[Path]:
    """Yield an empty staging directory; on success rename it to `final`, on error remove it.

    Raises FileExistsError if `final` already exists when the rename happens (another writer
    published first); callers that derive `final` from content can treat that as success.
    Raises DiskFullError naming `final` (and `size_hint`, the bytes the caller expects to write,
    roughly) when the disk fills up. Staging folders next to `final` whose writer is gone are
    removed first (`remove_stale_staging`).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final.parent)
    staging = staging_path(final)
    staging.mkdir()
    try:
        try:
            yield staging
            for p in staging.rglob("*"):
                if p.is_file():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
            _fsync_dir(staging)
            try:
                os.rename(staging, final)
            except OSError as e:
                if final.exists():
                    raise FileExistsError(f"{final} was published by another writer") from e
                raise
            _fsync_dir(final.parent)
        except Exception as e:  # a full disk is said for `final`, even when a write inside says it
            if _full_disk_errno(e) is None:
                raise
            written = _tree_bytes(staging)
            shutil.rmtree(staging, ignore_errors=True)  # before measuring the free space
            raise disk_full_error(final, e, need=size_hint, estimate=True, written=written) from e
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _tree_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            total += p.stat().st_size if p.is_file() else 0
    return total


def staging_path(final: Path, pid: int | None = None) -> Path:
    """A fresh staging folder name next to `final`, owned by `pid` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    owner = f"p{pid}-s{start_time(pid)}-h{host_id()}"
    return final.parent / f"{STAGING_PREFIX}{final.name}-{owner}-{uuid.uuid4().hex[:8]}"


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders in `parent` that no live process owns: those whose owner
    (recorded in the name) has exited on this host, and those without an owner (written by an
    older version) untouched for LEGACY_STAGING_AGE_S. Logs a warning for each; returns them."""
    try:
        entries = [p for p in Path(parent).iterdir() if p.name.startswith(STAGING_PREFIX)]
    except OSError:
        return []
    removed = []
    for p in entries:
        m = _OWNER.search(p.name)
        try:
            if not p.is_dir():
                continue
            if m is not None:
                pid = int(m["pid"])
                if Owner(pid, int(m["start"]), m["host"]).alive():
                    continue
                why = f"its writer (pid {pid}) is no longer running"
            else:
                age = time.time() - p.stat().st_mtime
                if age < LEGACY_STAGING_AGE_S:
                    continue
                why = f"no owner recorded and untouched for {age / 3600:.0f} h"
        except OSError:
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            log.warning("removed stale staging folder %s: %s", p, why)
            removed.append(p)
    return removed
