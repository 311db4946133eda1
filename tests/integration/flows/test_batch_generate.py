"""The batch-generate flow: crash and resume, Dask equals in-process, lineage and counts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aigc_core.atomic import sha256_file
from aigc_core.curation.decisions import rejected_by_reason
from flows.batch_generate import run_batch_generate
from flows.nightly import nightly_retrain

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[3]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A home with a registered champion (the nightly flow on the smoke preset, once)."""
    home = tmp_path_factory.mktemp("batch-home")
    summary = nightly_retrain(preset="smoke", n_generate=16, home=str(home))
    return home, summary["model_name"]


def read_batch(batch_dir: Path) -> tuple[dict, pd.DataFrame]:
    """The manifest and all rows, checking every part is readable and matches the manifest."""
    manifest = json.loads((batch_dir / "manifest.json").read_text())
    frames = []
    for f in manifest["files"]:
        path = batch_dir / f["path"]
        assert sha256_file(path) == f["sha256"]
        part = pq.read_table(path).to_pandas()
        assert len(part) == f["rows"] and int(part["kept"].sum()) == f["kept"]
        frames.append(part)
    return manifest, pd.concat(frames, ignore_index=True)


def assert_complete(batch_dir: Path, n: int) -> tuple[dict, pd.DataFrame]:
    manifest, table = read_batch(batch_dir)
    assert len(table) == n == manifest["n_generated"]
    assert table["id"].is_unique and table["index"].tolist() == list(range(n))
    assert table["png"].map(bytes).is_unique  # no item generated twice
    assert int(table["kept"].sum()) == manifest["n_kept"]
    assert rejected_by_reason(table["reason"]) == manifest["rejected_by_reason"]
    assert ((table["reason"] == "") == table["kept"]).all()
    return manifest, table


KILLER = """
import os, signal, sys
from pathlib import Path
import aigc_core.content.shard as shard

written = 0
real_write = shard.write_part

def write_then_die(path, table):
    global written
    if written == 2:  # the third shard dies mid-write: a half-written temp file, no rename
        (Path(path).parent / ".part-crash.tmp").write_bytes(b"PAR1 half a file")
        os.kill(os.getpid(), signal.SIGKILL)
    real_write(path, table)
    written += 1

shard.write_part = write_then_die
from flows.batch_generate import run_batch_generate
run_batch_generate(model=sys.argv[1], n=int(sys.argv[2]), shards=int(sys.argv[3]), seed=5,
                   home=sys.argv[4])
"""


def test_a_killed_job_resumes_to_exactly_n_items(champion, tmp_path):
    from prefect.settings import PREFECT_API_URL

    home, model = champion
    n, shards = 50, 5
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), model, str(n), str(shards), str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == -9, p.stderr[-3000:]  # SIGKILLed, as a crashed machine would be
    work = next((home / "content" / ".work").iterdir())
    assert sorted(f.name for f in work.glob("part-*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert not (home / "content" / work.name).exists()  # nothing published

    result = run_batch_generate(model=model, n=n, shards=shards, seed=5, home=str(home))
    assert result["batch_id"] == work.name
    assert result["shards_skipped"] == 2  # finished shards were not generated again
    manifest, table = assert_complete(Path(result["batch_dir"]), n)
    assert len(manifest["files"]) == shards
    assert not work.exists()  # the working parts are cleaned up once published
    # every item names its lineage
    assert set(table["model_version"]) == {manifest["model_version"]}
    assert set(table["snapshot_id"]) == {manifest["snapshot_id"]} != {""}
    # a third run finds the published batch and writes nothing
    again = run_batch_generate(model=model, n=n, shards=shards, seed=5, home=str(home))
    assert again["batch_run_id"] == manifest["batch_run_id"]


def test_dask_local_2_equals_in_process(champion):
    home, model = champion
    kwargs = dict(model=f"{model}@champion", n=40, shards=4, seed=11, home=str(home))
    local = run_batch_generate(**kwargs)
    moved = Path(local["batch_dir"]).with_name("in-process")
    shutil.move(local["batch_dir"], moved)
    on_dask = run_batch_generate(**kwargs, dask_local=2)
    assert on_dask["batch_id"] == local["batch_id"] and on_dask["shards_skipped"] == 0
    m1, t1 = assert_complete(moved, 40)
    m2, t2 = assert_complete(Path(on_dask["batch_dir"]), 40)
    # the same items, bit for bit: pixels, ids, seeds, hashes, decisions and lineage
    exact = [c for c in t1.columns if c not in ("confidence", "train_distance")]
    pd.testing.assert_frame_equal(t1[exact], t2[exact], check_exact=True)
    # float scores agree to float32 rounding (Dask workers run torch on one thread each, which
    # may reorder the evaluator's sums)
    for c in ("confidence", "train_distance"):
        np.testing.assert_allclose(t1[c], t2[c], rtol=1e-5, atol=1e-6)
    for key in ("n_kept", "rejected_by_reason", "shards", "policy", "model_version"):
        assert m1[key] == m2[key]


def test_a_version_reference_and_a_policy_file(champion, tmp_path):
    home, model = champion
    policy = tmp_path / "policy.yaml"
    policy.write_text("image:\n  min_confidence: 1.0\n  max_duplicate_bits: null\n")
    result = run_batch_generate(
        model=f"{model}/1", n=12, shards=2, seed=3, policy_file=str(policy), home=str(home)
    )
    manifest, table = assert_complete(Path(result["batch_dir"]), 12)
    assert manifest["model_version"] == "1"
    assert manifest["policy"]["image"]["max_duplicate_bits"] is None
    assert "duplicate" not in manifest["rejected_by_reason"]
    # a confidence of exactly 1.0 in float32 is possible but rare: most items fail this policy
    assert manifest["rejected_by_reason"].get("low_confidence<1", 0) >= 1
    report = (Path(result["batch_dir"]) / "report.html").read_text()
    assert result["batch_id"] in report and "Rejected (" in report


def test_unknown_alias_is_a_clear_error(champion):
    home, model = champion
    with pytest.raises(LookupError, match="has no 'gold' alias"):
        run_batch_generate(model=f"{model}@gold", n=4, home=str(home))


def test_prompts_for_an_image_model_are_refused(champion, tmp_path):
    home, model = champion
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    with pytest.raises(ValueError, match="generates images.*drop --prompt-file"):
        run_batch_generate(model=model, n=4, prompt_file=str(prompts), home=str(home))
