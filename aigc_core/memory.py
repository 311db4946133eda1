"""The C heap, where torch's CPU tensors and Arrow's system pool live: glibc's malloc tuned for
the two kinds of work, through its documented knobs (mallopt, malloc_trim). Elsewhere than on
glibc, `keep_freed_memory` does nothing and `release_memory` trims Arrow's system pool.

- Repeated large tensors (inference batches): by default glibc gives every allocation over
  32 MiB its own mmap and hands freed memory at the top of the heap back to the OS, so each batch
  of 256 from the seed's DCGAN touched ~80 MB of fresh pages: 320,000 page faults per 4,096
  images. `keep_freed_memory` makes the process keep what it frees for reuse: under 10,000 faults,
  and 1,542 to 1,636 images/s instead of 1,403 to 1,516 (benchmarks/generate_throughput.py).
- Staged data work (ingest): `release_memory` gives back what a stage freed before the next one
  allocates, so the stages' transients do not add up to the peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters (malloc.h)
KEEP_BYTES = 256 << 20  # allocations below this come from the heap; this much free is kept
TOP_PAD_BYTES = 64 << 20  # the heap grows by at least this much at a time


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, where it is glibc (has mallopt and malloc_trim); else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 (AttributeError elsewhere than on glibc)
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """From now on, keep freed memory in the process for reuse (up to KEEP_BYTES at the top of
    each heap) and serve allocations below KEEP_BYTES from the heap rather than fresh mmaps.
    Process-wide and once per process; `release_memory` still gives memory back on request.
    Returns whether the C library took the settings."""
    libc = _libc()
    if libc is None:
        return False
    settings = (
        (M_MMAP_THRESHOLD, KEEP_BYTES),
        (M_TRIM_THRESHOLD, KEEP_BYTES),
        (M_TOP_PAD, TOP_PAD_BYTES),
    )
    ok = all([libc.mallopt(param, value) == 1 for param, value in settings])  # each one tried
    log.debug("malloc keeps freed memory for reuse: %s", ok)
    return ok


def release_memory() -> None:
    """Give the memory freed so far back to the OS, so a stage's transients (Arrow's system pool
    and Python's large objects both live on the C heap) do not add to the next stage's peak.
    Arrow's `release_unused` trims only the top of the heap; glibc's malloc_trim(0) also returns
    free pages in its middle."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    else:
        import pyarrow as pa

        pa.system_memory_pool().release_unused()
