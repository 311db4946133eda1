"""The text VAE as a user runs it (real processes, a real MLflow store): `aigc run --preset smoke
--model textvae --dataset python-docs` trains, gates, registers and makes a curated batch; an
interpolation batch between two sentences is planned and made from its champion (through
`aigc generate --interpolate A B --steps K` where the batch flow takes `interpolate`); and the
command's interpolation checks fail fast as usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.e2e.test_cli import aigc

pytestmark = pytest.mark.slow

A, B = "The list is empty.", "A new object is returned."
STEPS = 4


def batch_table(batch_dir: str) -> pd.DataFrame:
    parts = sorted(Path(batch_dir).rglob("*.parquet"))
    assert parts, batch_dir
    return pd.concat(pq.read_table(p).to_pandas() for p in parts)


def test_textvae_smoke_run_then_an_interpolation_batch(tmp_path):
    home = tmp_path / "home"
    run = aigc(
        "run", "--preset", "smoke", "--model", "textvae", "--dataset", "python-docs",
        "--n", "16", "--json", home=home, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["model_name"] == "aigc-textvae-python-docs"
    assert summary["promoted"] is True, summary  # a smoke model is not collapsed yet
    assert summary["n_generated"] == 16
    items = batch_table(summary["batch_dir"])
    assert len(items) == 16 and {"kept", "reason", "text", "perplexity"} <= set(items.columns)

    # the interpolation batch, planned and made as the batch flow does it
    from aigc_core import content
    from aigc_core.paths import Home
    from tasks.tracking import Tracker

    h = Home.resolve(home)
    tracker = Tracker(h)
    ref = "aigc-textvae-python-docs@champion"
    version = tracker.resolve(ref)
    plan = content.make_plan(
        version, h, STEPS, None, 0, model_ref=ref,
        fetch_model=lambda: content.model_files(h, version, tracker.download_model),
        sampling={"temperature": 0.0}, interpolate=[A, B],
    )  # fmt: skip
    assert plan.kind == "text" and plan.interpolate == (A, B) and plan.n == STEPS
    result = content.run_shard(plan, 0, h)
    part = pq.read_table(result.path).to_pandas()
    assert part["prompt"].tolist() == [f"{A} -> {B} @ {t:.3f}" for t in (0.0, 1 / 3, 2 / 3, 1.0)]
    again = content.make_plan(
        version, h, STEPS, None, 0, model_ref=ref,
        fetch_model=lambda: content.model_files(h, version, tracker.download_model),
        sampling={"temperature": 0.0}, interpolate=[A, B],
    )  # fmt: skip
    assert again.batch_id == plan.batch_id  # the same request, the same batch
    with pytest.raises(ValueError, match="drop --prompt-file"):
        content.make_plan(
            version, h, STEPS, None, 0, model_ref=ref, fetch_model=lambda: Path("x"),
            prompt_file="p.txt", interpolate=[A, B],
        )  # fmt: skip

    gen = aigc(
        "generate", "--model", ref, "--interpolate", A, B, "--steps", str(STEPS), "--json",
        home=home, timeout=300,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    made = json.loads(gen.stdout)
    assert made["n_generated"] == STEPS
    table = batch_table(made["batch_dir"]).sort_values("index")
    assert table["prompt"].tolist()[0] == f"{A} -> {B} @ 0.000"
    assert {"kept", "reason"} <= set(table.columns)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--interpolate", A, B], "--interpolate needs --steps K"),
        (["--interpolate", A, B, "--steps", "3", "--n", "3"], "drop --n"),
        (["--interpolate", A, B, "--steps", "3", "--prompt-file", "p.txt"], "drop --prompt-file"),
        (["--steps", "3", "--n", "3"], "--steps applies to --interpolate"),
        (["--interpolate", A, B, "--steps", "1"], "--steps"),
    ],
)
def test_interpolation_options_are_usage_errors(tmp_path, args, said):
    p = aigc("generate", "--model", "m", *args, home=tmp_path / "h", timeout=120)
    assert p.returncode == 2, p.stderr
    assert said in p.stderr and "Traceback" not in p.stderr
