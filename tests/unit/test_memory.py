"""aigc_core.memory: freed memory is reused without fresh page faults, and can still be released.

Each case runs in a fresh interpreter, so the C heap starts as torch's import leaves it."""

import json
import subprocess
import sys

import pytest

from aigc_core import memory

pytestmark = pytest.mark.skipif(memory._libc() is None, reason="needs glibc's malloc")
NBYTES = 48 << 20  # over glibc's largest default mmap threshold (32 MiB)
PAGES = NBYTES // 4096

ROUNDS = """
import json, resource, sys
import torch
from aigc_core import memory

def faults():  # minor page faults of allocating, filling and freeing an NBYTES tensor
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones({nbytes}, dtype=torch.uint8)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

keep = sys.argv[1] == "keep" and memory.keep_freed_memory()
rounds = [faults() for _ in range(12)]
memory.release_memory()
print(json.dumps({{"keep": keep, "rounds": rounds, "after_release": faults()}}))
"""


def run_rounds(mode: str) -> dict:
    code = ROUNDS.format(nbytes=NBYTES)
    p = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_large_tensors_reuse_freed_memory():
    default = run_rounds("default")
    assert min(default["rounds"]) >= PAGES  # every round maps fresh pages

    kept = run_rounds("keep")
    assert kept["keep"]
    # the first rounds may touch the heap's never-used free memory; then it is all reused
    assert sum(kept["rounds"][-4:]) < PAGES, kept
    assert kept["after_release"] > PAGES // 2  # release_memory still gives it back
