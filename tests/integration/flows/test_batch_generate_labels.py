"""The batch-generate flow with a conditional model: the classes asked reach every item, curation
checks the evaluator sees them, the manifest counts them; bad requests fail before any shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigc_core.generation.labels import LabelsError, item_labels, parse_labels
from flows.batch_generate import run_batch_generate
from flows.nightly import nightly_retrain
from tests.integration.flows.test_batch_generate import assert_complete

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def conditional_champion(tmp_path_factory):
    """A home with a conditional DCGAN champion (the nightly flow, smoke-conditional, once)."""
    home = tmp_path_factory.mktemp("labels-home")
    summary = nightly_retrain(preset="smoke-conditional", n_generate=16, home=str(home))
    return home, summary["model_name"]


def test_the_classes_asked_are_drawn_checked_and_counted(conditional_champion, tmp_path):
    home, model = conditional_champion
    n = 30
    result = run_batch_generate(
        model=f"{model}@champion", n=n, shards=4, seed=2, labels="3,7", home=str(home)
    )
    manifest, table = assert_complete(Path(result["batch_dir"]), n)
    assert table["requested_label"].tolist() == [3, 7] * (n // 2)  # across shard boundaries
    wrong = table["requested_label"] != table["predicted_label"]
    assert table.loc[wrong, "reason"].str.contains("wrong_class").all()
    assert not table.loc[~wrong, "reason"].str.contains("wrong_class").any()
    assert manifest["rejected_by_reason"].get("wrong_class", 0) == int(wrong.sum())
    kept = table[table["kept"]]["requested_label"].value_counts()
    assert manifest["labels"] == {
        "requested": {"3": 15, "7": 15},
        "kept": {"3": int(kept.get(3, 0)), "7": int(kept.get(7, 0))},
    }
    assert result["labels"] == manifest["labels"]
    report = (Path(result["batch_dir"]) / "report.html").read_text()
    assert "Classes asked" in report

    # the same classes from a labels file are the same request: the published batch is found
    labels = tmp_path / "labels.txt"
    labels.write_text("# a three, then a seven\n3\n7\n")
    again = run_batch_generate(
        model=f"{model}@champion", n=n, shards=4, seed=2, labels_file=str(labels), home=str(home)
    )
    assert again["batch_id"] == result["batch_id"]
    assert again["batch_run_id"] == result["batch_run_id"]


def test_a_class_mix_and_no_labels(conditional_champion):
    home, model = conditional_champion
    mix = run_batch_generate(model=model, n=20, shards=2, labels="1:0.25,2:0.75", home=str(home))
    manifest, table = assert_complete(Path(mix["batch_dir"]), 20)
    want = item_labels(parse_labels("1:0.25,2:0.75", 10), 0, 20).tolist()
    assert table["requested_label"].tolist() == want
    assert manifest["labels"]["requested"] == {"1": want.count(1), "2": want.count(2)}

    plain = run_batch_generate(model=model, n=20, shards=2, home=str(home))
    manifest, table = assert_complete(Path(plain["batch_dir"]), 20)
    assert table["requested_label"].isna().all() and "labels" not in manifest
    assert "wrong_class" not in manifest["rejected_by_reason"]


def test_requests_the_model_cannot_honour_fail_before_any_shard(conditional_champion):
    home, model = conditional_champion
    before = set((home / "content").iterdir())
    with pytest.raises(LabelsError, match=r"label 12 is out of range.*0\.\.9"):
        run_batch_generate(model=model, n=4, labels="3,12", home=str(home))
    with pytest.raises(ValueError, match=r"dcgan model, which takes no --guidance option"):
        run_batch_generate(model=model, n=4, guidance=3.0, home=str(home))
    with pytest.raises(ValueError, match=r"either labels or a labels file"):
        run_batch_generate(model=model, n=4, labels="3", labels_file="x.txt", home=str(home))
    work = home / "content" / ".work"
    assert not work.exists() or not any(work.iterdir())  # no shard was started
    assert set((home / "content").iterdir()) == before
