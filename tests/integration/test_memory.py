"""aigc_core.memory: freed memory stays in the process for reuse, and can still be released.

Each case runs in a fresh interpreter, so the C heap starts as torch's import leaves it. A loop
that allocates one lone 64-byte-aligned tensor is glibc's worst case: memalign frees a small
trailing remainder after each block, and while glibc's per-size cache (tcache, 7 entries) takes
those remainders, each one pins its block away from the top of the heap, so the first rounds
(7 here, 9 in one CI run; 2 with GLIBC_TUNABLES=glibc.malloc.tcache_count=0) still map fresh
pages. Generation's batches allocate more, and their second batch already faulted 0 pages (then
at most 3,724 per batch of 256, against 700 to 40,000 without keep_freed_memory). So the rounds
are many, and reuse is required of the last ones."""

import json
import subprocess
import sys

import pytest

from aigc_core import memory

pytestmark = pytest.mark.skipif(memory._libc() is None, reason="needs glibc's malloc")
NBYTES = 48 << 20  # over glibc's largest default mmap threshold (32 MiB)
PAGES = NBYTES // 4096
ROUNDS_N = 20

ROUNDS = """
import json, os, resource, sys
import torch
from aigc_core import memory

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def faults():  # minor page faults of allocating, filling and freeing an NBYTES tensor
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones({nbytes}, dtype=torch.uint8)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

keep = sys.argv[1] == "keep" and memory.keep_freed_memory()
start = resident()
rounds = [faults() for _ in range({rounds})]
kept_bytes = resident() - start  # what the process still holds after freeing every tensor
memory.release_memory()
released_bytes = kept_bytes - (resident() - start)
print(json.dumps({{"keep": keep, "rounds": rounds, "kept_bytes": kept_bytes,
                  "released_bytes": released_bytes}}))
"""


def run_rounds(mode: str) -> dict:
    code = ROUNDS.format(nbytes=NBYTES, rounds=ROUNDS_N)
    p = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_by_default_every_large_tensor_maps_fresh_pages():
    default = run_rounds("default")
    assert not default["keep"]
    assert min(default["rounds"]) >= PAGES, default  # each round faults in all of its pages
    assert default["kept_bytes"] < NBYTES // 2, default  # and gives them back when freed


def test_kept_memory_is_reused_and_released_on_request():
    kept = run_rounds("keep")
    assert kept["keep"]
    assert kept["kept_bytes"] >= NBYTES, kept  # the freed tensor's pages stay in the process
    assert sum(kept["rounds"][-5:]) < PAGES, kept  # and later tensors reuse them
    assert kept["released_bytes"] >= NBYTES // 2, kept  # release_memory still gives them back
