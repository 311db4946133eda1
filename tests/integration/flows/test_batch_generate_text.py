"""Text batches: a tiny char-LSTM trained by the nightly flow on a tiny text snapshot, then
batch-generate with prompts, sampling options and a policy file; crash and resume; Dask."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import aigc_core.content.shard as shard
from aigc_core import families
from aigc_core.curation.decisions import rejected_by_reason
from aigc_core.models.io import CONFIG, WEIGHTS
from aigc_core.paths import Home
from flows.batch_generate import run_batch_generate
from flows.nightly import nightly_retrain
from tasks.tracking import Tracker
from tests.integration.flows.test_batch_generate import read_batch

pytestmark = pytest.mark.slow

ANIMALS = ["cat", "dog", "owl", "fox", "hen", "ram"]
PLACES = ["mat", "log", "hill", "barn", "river bank", "old wall"]


@pytest.fixture(scope="module")
def text_champion(tmp_path_factory):
    """A home whose champion is a smoke-preset char-LSTM (the nightly flow, ending with a
    text batch)."""
    home = tmp_path_factory.mktemp("text-home")
    corpus = home.parent / "tales.txt"
    corpus.write_text(
        "\n\n".join(
            f"The {ANIMALS[i % 6]} number {i} sat on the {PLACES[i * 7 % 6]}. It was happy."
            for i in range(240)
        )
    )
    summary = nightly_retrain(
        dataset="tales", path=str(corpus), family="charlstm", n_generate=8, home=str(home)
    )
    return home, summary


def assert_complete(batch_dir: Path, n: int) -> tuple[dict, pd.DataFrame]:
    manifest, table = read_batch(batch_dir)
    assert manifest["kind"] == "text" and len(table) == n == manifest["n_generated"]
    assert table["id"].is_unique and table["index"].tolist() == list(range(n))
    assert table["seed"].is_unique  # every item has its own seed: no item generated twice
    assert int(table["kept"].sum()) == manifest["n_kept"]
    assert rejected_by_reason(table["reason"]) == manifest["rejected_by_reason"]
    assert ((table["reason"] == "") == table["kept"]).all()  # rejected items say why
    assert set(table["finish_reason"]) <= {"length", "stop"}
    return manifest, table


def test_the_nightly_flow_ends_with_a_text_batch(text_champion):
    home, summary = text_champion
    assert summary["batch_kind"] == "text" and summary["promoted"]
    manifest, table = assert_complete(Path(summary["batch_dir"]), 8)
    assert (table["prompt"] == "").all()  # no prompts: new documents
    assert set(table["model_version"]) == {summary["model_version"]}
    assert set(table["snapshot_id"]) == {summary["snapshot_id"]}
    assert set(table["run_id"]) == {summary["run_id"]}
    assert manifest["sampling"]["max_new_tokens"] == 200


def test_the_training_run_logs_its_evaluation_samples_as_a_table(text_champion):
    import mlflow

    home, summary = text_champion
    uri = Tracker(Home.resolve(home)).uri
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_run(summary["run_id"]).info.experiment_id
    samples = client.load_table(experiment, "text_samples.json", run_ids=[summary["run_id"]])
    assert len(samples) == 32 and {"prompt", "text", "finish_reason"} <= set(samples.columns)
    assert samples["text"].str.len().gt(0).all()


def test_prompts_sampling_options_and_a_policy_file(text_champion, tmp_path):
    home, summary = text_champion
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat\n\nThe owl sat\nIt\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("text:\n  min_words: 2\n  max_perplexity: 34.5\n  blocklist: [dog]\n")
    n = 10
    result = run_batch_generate(
        model=summary["model_name"],
        n=n,
        shards=2,
        seed=3,
        policy_file=str(policy),
        prompt_file=str(prompts),
        home=str(home),
        temperature=0.9,
        top_k=20,
        top_p=0.95,
        max_new_tokens=30,
        stop=["."],
    )
    assert result["kind"] == "text" and result["shards_skipped"] == 0
    manifest, table = assert_complete(Path(result["batch_dir"]), n)
    assert len(manifest["files"]) == 2 and manifest["n_prompts"] == 3
    assert manifest["policy"]["text"]["max_perplexity"] == 34.5
    assert manifest["sampling"] == {
        "max_new_tokens": 30,
        "temperature": 0.9,
        "top_k": 20,
        "top_p": 0.95,
        "stop": ["."],
    }
    assert table["prompt"].tolist() == [["The cat", "The owl sat", "It"][i % 3] for i in range(n)]
    assert (table["text"].str.len() <= 30).all() and not table["text"].str.contains(
        ".", regex=False
    ).any()
    assert ((table["finish_reason"] == "stop") | (table["text"].str.len() == 30)).all()
    # the policy's thresholds: every reason is one of its scorers'
    reasons = manifest["rejected_by_reason"]
    empty = table["text"] == ""  # no characters, so no perplexity to bound
    assert table["perplexity"].isna().equals(empty) and (table["perplexity"][~empty] >= 1).all()
    assert empty.sum() == reasons.get("no_perplexity", 0)
    assert (table["perplexity"] > 34.5).sum() == reasons.get("perplexity>34.5", 0)
    assert (table["words"] < 2).sum() == reasons.get("too_short<2", 0)
    hits = table["text"].str.contains(r"(?<!\w)dog(?!\w)", case=False, regex=True)
    assert hits.sum() == reasons.get("blocklist", 0)
    # an item is regenerated alone from its prompt and seed by the version it names
    files = Tracker(Home.resolve(home)).download_model(
        f"models:/{summary['model_name']}/1", tmp_path / "v1"
    )
    model = families.get("charlstm").load_generator(files / WEIGHTS, files / CONFIG)
    row = table.iloc[7]
    kw = dict(temperature=0.9, top_k=20, top_p=0.95, stop=["."])
    assert model.generate([row["prompt"]], 30, [int(row["seed"])], **kw)[0][0] == row["text"]
    report = (Path(result["batch_dir"]) / "report.html").read_text()
    assert report.count('class="card text"') == n and '<b class="prompt">The cat</b>' in report
    assert not (Path(result["batch_dir"]) / "contact_sheet.png").exists()


def test_greedy_copies_are_near_duplicates_across_shards(text_champion):
    home, summary = text_champion
    result = run_batch_generate(
        model=f"{summary['model_name']}@champion",
        n=6,
        shards=2,
        home=str(home),
        temperature=0.0,
        max_new_tokens=40,
    )
    _, table = assert_complete(Path(result["batch_dir"]), 6)
    assert table["text"].nunique() == 1  # greedy: the seed does not matter
    assert table["duplicate_of"].tolist() == [-1, 0, 0, 0, 0, 0]
    assert all("near_duplicate" in r.split(";") for r in table["reason"][1:])


def test_a_crashed_shard_is_redone_and_finished_ones_skipped(text_champion, monkeypatch):
    home, summary = text_champion
    kwargs = dict(model=summary["model_name"], n=9, shards=3, seed=8, home=str(home))
    real_write = shard.write_part

    def crash_on_shard_2(path, table):
        if Path(path).name == "part-00002.parquet":
            raise OSError("disk vanished")
        real_write(path, table)

    monkeypatch.setattr(shard, "write_part", crash_on_shard_2)
    with pytest.raises(OSError, match="disk vanished"):
        run_batch_generate(**kwargs)
    work = next(p for p in (home / "content" / ".work").iterdir() if p.is_dir())
    assert sorted(p.name for p in work.glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    monkeypatch.setattr(shard, "write_part", real_write)
    result = run_batch_generate(**kwargs)
    assert result["batch_id"] == work.name and result["shards_skipped"] == 2
    assert_complete(Path(result["batch_dir"]), 9)
    assert not work.exists()


def test_dask_local_2_equals_in_process(text_champion):
    home, summary = text_champion
    kwargs = dict(model=summary["model_name"], n=8, shards=4, seed=21, home=str(home))
    local = run_batch_generate(**kwargs, max_new_tokens=24)
    moved = Path(local["batch_dir"]).with_name("text-in-process")
    shutil.move(local["batch_dir"], moved)
    on_dask = run_batch_generate(**kwargs, max_new_tokens=24, dask_local=2)
    assert on_dask["batch_id"] == local["batch_id"] and on_dask["shards_skipped"] == 0
    m1, t1 = assert_complete(moved, 8)
    m2, t2 = assert_complete(Path(on_dask["batch_dir"]), 8)
    floats = ["perplexity", "train_ngram_frac"] + [c for c in t1 if c.endswith("gram_frac")]
    exact = [c for c in t1.columns if c not in floats]
    pd.testing.assert_frame_equal(t1[exact], t2[exact], check_exact=True)
    for c in floats:
        np.testing.assert_allclose(t1[c], t2[c], rtol=1e-5)
    for key in ("n_kept", "rejected_by_reason", "shards", "policy", "sampling"):
        assert m1[key] == m2[key]


def test_bad_prompts_are_refused_before_any_shard(text_champion, tmp_path):
    home, summary = text_champion
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat\nThe zebra ♞\n")
    with pytest.raises(ValueError, match=r"prompt 2 of .*prompts.txt.*outside the model"):
        run_batch_generate(
            model=summary["model_name"], n=4, prompt_file=str(prompts), home=str(home)
        )
    with pytest.raises(ValueError, match="stop string.*never writes it"):
        run_batch_generate(model=summary["model_name"], n=4, stop=["♞"], home=str(home))
    with pytest.raises(ValueError, match="top_p must lie in"):
        run_batch_generate(model=summary["model_name"], n=4, top_p=2.0, home=str(home))
    assert json.loads(json.dumps(summary))  # the summary stays JSON-able
