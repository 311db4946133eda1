"""Disk full during a write (simulated with RLIMIT_FSIZE, or an ENOSPC raised by the writer): a
clear error that names the path and the space, no partial file at a final path, and what was
published earlier stays as it was."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aigc_core.atomic import (
    DiskFullError,
    disk_full_error,
    naming_full_disk,
    staged_dir,
    write_bytes_atomic,
)
from aigc_core.data.snapshot import image_table, list_snapshots, write_snapshot
from tests.conftest import tiny_images

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
    # the error names the snapshot being written and the space: what it needed, what is free
    assert f"cannot write {tmp_path / 'd'}/" in p.stdout, p.stdout
    assert "MiB to write" in p.stdout and "free there" in p.stdout, p.stdout
    published = p.stdout.split()[1]
    # only the earlier snapshot is there, complete; no staging directory is left behind
    assert sorted(x.name for x in (tmp_path / "d").iterdir()) == [published]
    from aigc_core.data.snapshot import find_snapshot, read_table

    assert read_table(find_snapshot(tmp_path, published)).num_rows == 8


SHARD_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from aigc_core.atomic import write_bytes_atomic

    part = Path(sys.argv[1]) / "content" / ".work" / "b1" / "part-00000.parquet"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    try:
        write_bytes_atomic(part, b"x" * 300_000)  # how a content shard's part is written
    except OSError as e:
        print(type(e).__name__, e.errno, e, flush=True)
        sys.exit(3)
""")


def test_a_full_disk_while_writing_a_content_shard_names_the_part_and_its_size(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", SHARD_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 3, p.stdout + p.stderr
    part = tmp_path / "content" / ".work" / "b1" / "part-00000.parquet"
    assert p.stdout.startswith(f"DiskFullError {errno.EFBIG} cannot write {part}: "), p.stdout
    assert "293.0 KiB to write" in p.stdout and "free there" in p.stdout, p.stdout
    assert list(part.parent.iterdir()) == []  # no temporary file left behind


def _arrow_full_disk(table, where, **kwargs):
    """What pyarrow raises when the device is full, after part of the file went out."""
    Path(where).write_bytes(b"PAR1" + bytes(4096))
    raise OSError(
        errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device"
    )


def test_no_space_left_during_a_snapshot_write_names_the_snapshot_and_the_space(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(pq, "write_table", _arrow_full_disk)
    data = tiny_images(n=40)
    with pytest.raises(DiskFullError) as caught:
        write_snapshot(
            tmp_path, "d", image_table(data), kind="image", source="t", params=data.params
        )
    e = caught.value
    assert e.errno == errno.ENOSPC and isinstance(e, OSError)
    assert str(e).startswith(f"cannot write {tmp_path / 'd'}/")
    assert "No space left on device (about " in str(e) and "free there" in str(e)
    assert "AIGC_HOME" in str(e)  # the fix
    assert list((tmp_path / "d").iterdir()) == [] and list_snapshots(tmp_path) == []


def test_no_space_left_while_publishing_a_folder_removes_the_staging(tmp_path):
    final = tmp_path / "content" / "b1"
    expected = f"cannot write {final}: No space left"
    with (
        pytest.raises(DiskFullError, match=expected) as caught,
        staged_dir(final, size_hint=5 << 20) as tmp,
    ):
        (tmp / "part-00000.parquet").write_bytes(bytes(3000))
        raise OSError(errno.ENOSPC, "No space left on device")
    assert "about 5.0 MiB to write, 2.9 KiB written before it failed" in str(caught.value)
    assert list(final.parent.iterdir()) == []


@pytest.mark.parametrize(
    "exc, code",
    [
        (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
        # safetensors and torch wrap the OSError in their own errors
        (
            RuntimeError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            ),
            errno.ENOSPC,
        ),
        (ValueError("not a disk problem"), None),
        (OSError(errno.ENOENT, "No such file or directory"), None),
    ],
)
def test_what_counts_as_a_full_disk(tmp_path, exc, code):
    full = disk_full_error(tmp_path / "model" / "weights.safetensors", exc, need=1000)
    assert (full.errno if full else None) == code
    if full:
        assert f"{tmp_path / 'model' / 'weights.safetensors'}" in str(full)
        assert "1000 B to write" in str(full)


def test_a_torch_error_caused_by_a_full_disk_is_named_too(tmp_path):
    path = tmp_path / "ckpt-00000001.pt"
    # what torch.save raises when its writer's OSError is swallowed: the OSError is the context
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    wrapped.__context__ = OSError(errno.EFBIG, "File too large")
    with pytest.raises(DiskFullError, match="File too large") as caught, naming_full_disk(path):
        raise wrapped
    assert str(caught.value).startswith(f"cannot write {path}: File too large")


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(ValueError, match="boom"), staged_dir(tmp_path / "x"):
        raise ValueError("boom")
    with pytest.raises(IsADirectoryError):
        (tmp_path / "dir").mkdir()
        write_bytes_atomic(tmp_path / "dir", b"x")


def test_a_full_disk_inside_a_published_folder_names_the_folder(tmp_path):
    final = tmp_path / "content" / "b1"
    inner = DiskFullError(errno.ENOSPC, "cannot write report.html: No space left", "report.html")
    with (
        pytest.raises(DiskFullError, match=f"cannot write {final}: No space left"),
        staged_dir(final) as tmp,  # e.g. the batch report, written atomically inside
    ):
        (tmp / "part-00000.parquet").write_bytes(bytes(100))
        raise inner
    assert list(final.parent.iterdir()) == []


def test_a_full_disk_during_a_checkpoint_names_it_and_leaves_no_partial_file(tmp_path):
    """torch.save hits the file size limit (a full disk): the error names the checkpoint and
    neither a temporary file nor a checkpoint is left; the earlier checkpoint is untouched."""
    script = textwrap.dedent("""
        import resource, signal, sys
        from pathlib import Path
        import torch
        from aigc_core.training.checkpoint import save_checkpoint
        d = Path(sys.argv[1])
        save_checkpoint(d, 1, {"w": torch.zeros(4)})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        try:
            save_checkpoint(d, 2, {"w": torch.zeros(100_000)})
        except OSError as e:
            print("error:", e, flush=True)
            sys.exit(3)
    """)
    d = tmp_path / "checkpoints"
    p = subprocess.run(
        [sys.executable, "-c", script, str(d)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 3, p.stderr[-2000:]
    assert f"cannot write {d / 'ckpt-00000002.pt'}: File too large" in p.stdout, p.stdout
    assert sorted(f.name for f in d.iterdir()) == ["ckpt-00000001.pt", "ckpt-00000001.pt.sha256"]
