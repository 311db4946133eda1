"""Audio batches through the flows: a conditional WaveGAN trained by the nightly flow on a folder
of tones (ending with an audio batch), then batch-generate asked for classes, across shards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from aigc_core.curation.decisions import rejected_by_reason
from aigc_core.generation.labels import LabelsError
from flows.batch_generate import run_batch_generate
from flows.nightly import nightly_retrain
from tests.integration.flows.test_batch_generate import read_batch

pytestmark = pytest.mark.slow

RATE = 16_000  # a folder's default rate and clip length (1.024 s)
TONES = {"low": 300.0, "high": 600.0}


@pytest.fixture(scope="module")
def audio_champion(tmp_path_factory):
    """A home whose champion is a smoke WaveGAN (conditional) on two classes of tones."""
    home = tmp_path_factory.mktemp("audio-home")
    folder = home.parent / "tones"
    t = np.arange(int(0.5 * RATE)) / RATE
    for name, hz in TONES.items():
        (folder / name).mkdir(parents=True)
        for i in range(12):
            x = (0.3 + 0.03 * i) * np.sin(2 * np.pi * hz * (1 + 0.004 * i) * t + i)
            soundfile.write(folder / name / f"{i}.wav", x.astype(np.float32), RATE)
    summary = nightly_retrain(
        dataset="tones",
        path=str(folder),
        family="wavegan",
        preset="smoke",
        n_generate=8,
        home=str(home),
    )
    return home, summary


def assert_complete(batch_dir: Path, n: int) -> tuple[dict, pd.DataFrame]:
    """The batch's manifest and rows: every item once, each a distinct WAV, each decided."""
    manifest, table = read_batch(batch_dir)
    assert manifest["kind"] == "audio" and len(table) == n == manifest["n_generated"]
    assert table["id"].is_unique and table["index"].tolist() == list(range(n))
    assert table["wav"].map(bytes).is_unique  # no clip generated twice
    assert int(table["kept"].sum()) == manifest["n_kept"]
    assert rejected_by_reason(table["reason"]) == manifest["rejected_by_reason"]
    assert ((table["reason"] == "") == table["kept"]).all()
    return manifest, table


def test_the_nightly_flow_ends_with_an_audio_batch(audio_champion):
    home, summary = audio_champion
    assert summary["batch_kind"] == "audio" and summary["promoted"]
    manifest, table = assert_complete(Path(summary["batch_dir"]), 8)
    assert manifest["kind"] == "audio" and manifest["sample_rate"] == RATE
    assert set(table["model_version"]) == {summary["model_version"]}
    assert set(table["snapshot_id"]) == {summary["snapshot_id"]}
    clip, rate = soundfile.read(io.BytesIO(table["wav"][0]), dtype="int16")
    assert rate == RATE and clip.shape == (16384,)
    assert table["requested_label"].isna().all()  # a nightly batch asks for no class


def test_batch_generate_asks_an_audio_model_for_classes(audio_champion):
    home, summary = audio_champion
    model = summary["model_name"]
    result = run_batch_generate(model=model, n=10, shards=3, seed=3, labels="1,0", home=str(home))
    manifest, table = assert_complete(Path(result["batch_dir"]), 10)
    assert table["requested_label"].tolist() == [1, 0] * 5  # across shard boundaries
    wrong = table["requested_label"] != table["predicted_label"]
    assert table.loc[wrong, "reason"].str.contains("wrong_class").all()
    assert manifest["labels"]["requested"] == {"0": 5, "1": 5}
    assert sum(manifest["predicted_labels"]["generated"].values()) == 10
    page = (Path(result["batch_dir"]) / "report.html").read_text()
    assert page.count("<audio controls") == 10 and "Classes asked" in page
    with pytest.raises(LabelsError, match="out of range"):
        run_batch_generate(model=model, n=4, labels="5", home=str(home))
