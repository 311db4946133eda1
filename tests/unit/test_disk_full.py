"""Disk full during a write (simulated with RLIMIT_FSIZE): a clear error, no partial file at a
final path, and what was published earlier stays as it was."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    import numpy as np
    from aigc_core.data.snapshot import image_table, write_snapshot
    from aigc_core.data.sources import ImageData

    def data(n, seed):
        rng = np.random.default_rng(seed)
        return ImageData(rng.uniform(size=(n, 1, 28, 28)).astype("float32"),
                         np.arange(n) % 10, [str(i) for i in range(10)], "test", {"seed": seed})

    root = Path(sys.argv[1])
    small = write_snapshot(root, "d", image_table(data(8, 0)), kind="image", source="t",
                           params={"seed": 0})
    print("published", small.id, flush=True)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk raises instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    try:
        write_snapshot(root, "d", image_table(data(4000, 1)), kind="image", source="t",
                       params={"seed": 1})
    except OSError as e:
        print("error:", e, flush=True)
        sys.exit(3)
    print("unexpectedly written", flush=True)
""")


def test_a_full_disk_during_a_snapshot_write_leaves_nothing_half_written(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 3, p.stdout + p.stderr
    assert "File too large" in p.stdout  # EFBIG, named in the error
    published = p.stdout.split()[1]
    # only the earlier snapshot is there, complete; no staging directory is left behind
    assert sorted(x.name for x in (tmp_path / "d").iterdir()) == [published]
    from aigc_core.data.snapshot import find_snapshot, read_table

    assert read_table(find_snapshot(tmp_path, published)).num_rows == 8
