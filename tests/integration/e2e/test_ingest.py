"""`aigc ingest` and `aigc datasets` as a user runs them: real processes, nothing mocked (the
killed ingest slows its own Parquet writes so the kill lands mid-write)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from aigc_core.data.snapshot import find_snapshot, list_snapshots, read_table
from data_contracts import validate_snapshot
from tests.unit.test_sources_idx import write_mnist

ROOT = Path(__file__).parents[3]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))}
    return {**e, "COLUMNS": "1000"}


def aigc(*args: str, home: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aigc", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd=ROOT,
    )


def tree(root: Path):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_mnist_idx_files_ingest_validate_and_reingest_writes_nothing(tmp_path):
    write_mnist(tmp_path / "idx", n=80, prefix="train")
    write_mnist(tmp_path / "idx", n=30, prefix="t10k", seed=5, gz=False)
    home = tmp_path / "home"
    first = aigc(
        "ingest", "--dataset", "mnist", "--path", str(tmp_path / "idx"), "--json", home=home
    )
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)  # stdout is exactly one JSON object
    assert out["created"] is True and out["rows"] == 110 and out["kind"] == "image"
    assert sum(out["splits"].values()) == 110 and min(out["splits"].values()) > 0
    assert Path(out["data_docs"]).is_file()

    snap = find_snapshot(home / "datasets", out["snapshot_id"])
    assert snap.manifest["image_shape"] == [1, 28, 28]
    assert validate_snapshot(read_table(snap), snap.manifest).success

    before = tree(home / "datasets")
    again = aigc(
        "ingest", "--dataset", "mnist", "--path", str(tmp_path / "idx"), "--json", home=home
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["snapshot_id"] == out["snapshot_id"]
    assert json.loads(again.stdout)["created"] is False
    assert tree(home / "datasets") == before

    listed = aigc("datasets", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["snapshots"]
    assert [(r["dataset"], r["snapshot_id"], r["rows"]) for r in rows] == [
        ("mnist", out["snapshot_id"], 110)
    ]
    table = aigc("datasets", home=home)
    assert table.returncode == 0 and out["snapshot_id"] in table.stdout


SLOW_INGEST = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pyarrow.parquet as pq

    real, ready = pq.write_table, Path(sys.argv[1])

    def slow_write(table, where, **kw):  # write one part, say so, then stall
        real(table, where, **kw)
        ready.write_text(str(where))
        time.sleep(600)

    pq.write_table = slow_write
    from aigc.cli import app
    sys.argv = ["aigc", *sys.argv[2:]]
    app()
    """
)


def test_a_process_killed_during_ingest_leaves_no_snapshot_and_the_next_succeeds(tmp_path):
    src = tmp_path / "docs.txt"
    src.write_text("".join(f"paragraph {i} of a small corpus\n\n" for i in range(200)))
    home, ready = tmp_path / "home", tmp_path / "ready"
    args = ["ingest", "--dataset", "corpus", "--path", str(src), "--home", str(home)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_INGEST, str(ready), *args],
        env=env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the ingest never started writing"
            time.sleep(0.1)
        part = Path(ready.read_text())
        assert part.is_file() and part.parent.name.startswith(".staging-")  # mid-write
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    datasets = home / "datasets"
    assert list_snapshots(datasets) == []
    assert [p.name for p in (datasets / "corpus").iterdir() if not p.name.startswith(".")] == []

    done = aigc(*args[:-2], "--json", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["created"] is True and out["rows"] == 200
    snap = find_snapshot(datasets, out["snapshot_id"])
    assert read_table(snap).num_rows == 200  # every part matches its manifest sha256
    assert [s.id for s in list_snapshots(datasets)] == [out["snapshot_id"]]


def test_errors_go_to_stderr_with_a_non_zero_exit(tmp_path):
    p = aigc("ingest", "--dataset", "nope", "--json", home=tmp_path / "h")
    assert p.returncode == 2 and p.stdout == ""  # not found: a usage error (README, Exit codes)
    assert "unknown dataset 'nope'" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "h" / "datasets").exists()
