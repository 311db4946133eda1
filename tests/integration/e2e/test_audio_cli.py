"""Audio as a user runs it (real processes, a real MLflow store): `aigc run --preset smoke
--model wavegan` on the built-in `notes` ingests, validates, trains, evaluates (FAD against its
floor), registers, promotes and makes a curated batch of WAV clips with a report that plays them;
`aigc generate` then makes another batch from the champion."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile

from tests.integration.e2e.test_cli import aigc

pytestmark = pytest.mark.slow


def batch_table(batch_dir: str) -> pd.DataFrame:
    parts = sorted(Path(batch_dir).rglob("*.parquet"))
    assert parts, batch_dir
    return pd.concat(pq.read_table(p).to_pandas() for p in parts)


def test_wavegan_smoke_run_on_notes_then_a_generate(tmp_path):
    home = tmp_path / "home"
    run = aigc(
        "run", "--preset", "smoke", "--model", "wavegan", "--n", "12", "--json",
        home=home, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["model_name"] == "aigc-wavegan-notes" and summary["batch_kind"] == "audio"
    metrics = summary["metrics"]
    assert metrics["fad"] > metrics["fad_floor"] > 0  # an untrained-ish model is far from real
    assert summary["n_generated"] == 12
    items = batch_table(summary["batch_dir"])
    assert len(items) == 12 and {"kept", "reason", "wav", "confidence"} <= set(items.columns)
    clip, rate = soundfile.read(io.BytesIO(items["wav"].iloc[0]), dtype="int16")
    assert (rate, clip.shape) == (8000, (4096,))  # the notes' rate and clip length
    report = (Path(summary["batch_dir"]) / "report.html").read_text()
    assert report.count("<audio") >= 1 and "data:audio/wav;base64," in report

    gen = aigc(
        "generate", "--model", "aigc-wavegan-notes@champion", "--n", "6", "--json",
        home=home, timeout=600,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    made = json.loads(gen.stdout)
    assert made["n_generated"] == 6
    again = batch_table(made["batch_dir"])
    assert set(again["model_version"]) == {summary["model_version"]}
