"""Promotions from separate processes sharing one home are serialized by the file lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aigc_core.promotion import read_audit
from tasks.tracking import Tracker
from tests.integration.test_registry import NAME, add_version, logged, store  # noqa: F401

pytestmark = pytest.mark.slow

PROMOTER = """
import sys, time
from pathlib import Path
from aigc_core.paths import Home
from tasks.registry import promote_version
from tasks.tracking import Tracker

home, version, gate = Home(Path(sys.argv[1])), sys.argv[2], Path(sys.argv[3])
Tracker(home)  # MLflow started before the race
(gate / f"ready-{version}").touch()
while not (gate / "go").exists():
    time.sleep(0.01)
promote_version(home, sys.argv[4], version, actor=f"process-{version}")
"""


def test_processes_promoting_at_once_leave_one_consistent_champion(logged, tmp_path):  # noqa: F811
    home, trained = logged
    fids = [30.0, 10.0, 20.0]
    versions = [add_version(home, trained, f) for f in fids]
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, str(home.root), v, str(gate), NAME],
            env=env,
            cwd=Path(__file__).parents[2],
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in versions
    ]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < len(versions) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
        time.sleep(0.05)
    (gate / "go").touch()
    for p in procs:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
    champion = Tracker(home).alias_version(NAME, "champion")
    assert champion.version == versions[fids.index(min(fids))]
    audit = read_audit(home, NAME)
    assert sorted(r["version"] for r in audit) == sorted(versions)
    champion = None
    for r in audit:  # one chain: each decision saw the champion the previous one left
        assert r["previous_champion"] == champion, audit
        champion = r["champion_after"]
