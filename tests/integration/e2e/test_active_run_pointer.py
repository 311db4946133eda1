"""The train task's active-run pointer (`runs/active/<family>-<snapshot>-<preset>[-<settings
digest>].json`): a run that died before its first checkpoint holds nothing to resume and must
not block the next start, while a run still training in a live process is never taken over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aigc_core import families, settings
from aigc_core.data.snapshot import image_table, write_snapshot
from aigc_core.paths import Home
from aigc_core.process import host_id, start_time
from aigc_core.stages import SnapshotRef
from tests.conftest import tiny_images

pytestmark = pytest.mark.slow
FAST = {"steps": 2, "bf16": False}


@pytest.fixture
def image_home(tmp_path) -> tuple[Path, SnapshotRef]:
    data = tiny_images(n=64)
    snap = write_snapshot(
        Home(tmp_path).ensure().datasets, "tiny", image_table(data), kind="image",
        source=data.source, params=data.params,
    )  # fmt: skip
    return tmp_path, snap.ref()


def pointer_of(home: Path, snap: SnapshotRef) -> Path:
    """The pointer of dcgan runs at the smoke preset with the FAST settings: settings other
    than the preset's make other runs, with a pointer of their own."""
    digest = settings.resolve(families.get("dcgan"), "smoke", {"train": FAST}).digest()
    return home / "runs" / "active" / f"dcgan-{snap.id}-smoke-{digest[:12]}.json"


def owner(pid: int) -> dict:
    """What a process training a run writes into its pointer (aigc_core.process.Owner)."""
    return {"pid": pid, "start": start_time(pid), "host": host_id()}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_live_run_is_kept_and_a_dead_one_without_checkpoints_is_replaced(image_home):
    from tasks.training import train_run

    home, snap = image_home
    pointer = pointer_of(home, snap)
    pointer.parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        pointer.write_text(json.dumps({"run_id": "0" * 32, **owner(other.pid)}))
        for resume in ("auto", "never"):
            with pytest.raises(RuntimeError, match=f"in progress in process {other.pid}"):
                train_run(
                    snap, "smoke", str(home), family="dcgan", resume=resume, config={"train": FAST}
                )
    finally:
        other.kill()
        other.wait()
    # the same pointer, its process gone and no checkpoint written: a plain start replaces it
    r = train_run(snap, "smoke", str(home), family="dcgan", resume="never", config={"train": FAST})
    assert r.steps == 2 and r.run_id != "0" * 32
    assert not pointer.exists()


def test_a_dead_run_with_a_checkpoint_is_still_resumable_only(image_home):
    from tasks.training import train_run

    home, snap = image_home
    first = train_run(snap, "smoke", str(home), family="dcgan", config={"train": FAST})
    pointer = pointer_of(home, snap)
    # as if the process had been killed (-9) after that checkpoint, pid long gone
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pointer.write_text(json.dumps({"run_id": first.run_id, **owner(gone.pid)}))
    with pytest.raises(RuntimeError, match="did not finish; resume it"):
        train_run(snap, "smoke", str(home), family="dcgan", resume="never", config={"train": FAST})
    again = train_run(
        snap, "smoke", str(home), family="dcgan", resume="auto", config={"train": FAST}
    )
    assert again.run_id == first.run_id and again.resumed_from_step == 2
    assert not pointer.exists()
