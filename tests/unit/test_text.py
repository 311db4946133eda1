"""Text sources and preprocessing: readers, cleaning, dedupe, content-hash splits."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aigc_core.data.files import DataSourceError
from aigc_core.data.ingest import prepare, publish
from aigc_core.data.snapshot import SnapshotError, read_table, text_split, text_table
from aigc_core.data.text import clean_text, clean_texts, load_text, read_documents


def cleaned(text: str) -> tuple[str, Counter]:
    counts = Counter()
    return clean_text(text, "NFC", counts), counts


def test_unicode_is_normalized_to_nfc():
    decomposed = "Cafe\u0301"  # e + combining acute accent
    assert cleaned(decomposed)[0] == "Caf\u00e9"


def test_control_characters_are_stripped_but_tabs_and_newlines_kept():
    text, counts = cleaned("a\x00b\x07c\td\r\ne\x1bf\x85")
    assert text == "abc\td\nef" and counts["control_chars_removed"] == 4


@pytest.mark.parametrize(
    "raw, masked, key",
    [
        ("write to jane.doe+spam@mail.example.co.uk today", "write to <email> today", "emails"),
        ("call 555-123-4567 now", "call <phone> now", "phones"),
        ("call (020) 7946 0958 now", "call <phone> now", "phones"),
        ("call +44 20 7946 0958 now", "call <phone> now", "phones"),
    ],
)
def test_personal_data_is_masked(raw, masked, key):
    text, counts = cleaned(raw)
    assert text == masked and counts[f"{key}_masked"] == 1


@pytest.mark.parametrize(
    "kept", ["Python 3.11.2 was released", "years 1999-2000", "x = 1234 5678", "see PEP 8"]
)
def test_numbers_that_are_not_phone_numbers_are_kept(kept):
    assert cleaned(kept) == (kept, Counter())


def test_duplicates_and_empty_documents_are_removed_and_counted():
    texts, counts = clean_texts(["one", "two", " one ", "\x00", "two", "three"])
    assert texts == ["one", "two", "three"]
    assert counts["duplicates_removed"] == 2 and counts["empty_removed"] == 1


def test_txt_paragraphs_are_documents(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first line\nsame paragraph\n\n\nsecond\r\n\nthird\n")
    assert list(read_documents(f)) == ["first line\nsame paragraph", "second", "third"]


def test_jsonl_csv_and_parquet_with_a_chosen_column(tmp_path):
    rows = ["alpha, with a comma", 'beta "quoted"', "gamma\nmultiline"]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"body": r, "n": 1}) for r in rows))
    pq.write_table(pa.table({"body": rows, "n": [1, 2, 3]}), tmp_path / "b.parquet")
    import csv

    with open(tmp_path / "c.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n", "body"])
        w.writerows([[i, r] for i, r in enumerate(rows)])
    for name in ("a.jsonl", "b.parquet", "c.csv"):
        assert list(read_documents(tmp_path / name, text_column="body")) == rows, name


def test_a_folder_is_read_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("from b")
    (tmp_path / "a.txt").write_text("from a")
    (tmp_path / "notes.md").write_text("ignored: not a text format we read")
    assert list(read_documents(tmp_path)) == ["from a", "from b"]


def test_replace_policy_counts_bad_bytes(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1") + b"nul\x00byte\n")
    data = load_text("mixed", f, bad_bytes="replace")
    assert data.texts == ["caf\ufffd cr\ufffdme\nnulbyte"]
    assert data.stats["invalid_utf8_replaced"] == 2 and data.stats["nul_bytes_removed"] == 1


def test_text_table_splits_by_content_hash_without_overlap():
    texts = [f"document number {i}" for i in range(300)]
    table = text_table(texts, validation_fraction=0.25)
    train, val = text_split(table, "train"), text_split(table, "validation")
    assert not set(train) & set(val) and len(train) + len(val) == 300
    assert 0.15 < len(val) / 300 < 0.35
    # the split is a function of the text alone: reordering the input keeps every assignment
    again = text_table(list(reversed(texts)), validation_fraction=0.25)
    assert set(text_split(again, "validation")) == set(val)


def test_text_split_of_an_unknown_or_empty_split():
    table = text_table(["only one"], validation_fraction=0.2)
    empty = "validation" if text_split(table, "train") else "train"
    with pytest.raises(SnapshotError, match=f"split '{empty}' is empty"):
        text_split(table, empty)
    with pytest.raises(SnapshotError, match="unknown split 'test'"):
        text_split(table, "test")


def test_python_docs_snapshot_round_trip(tmp_path):
    p = prepare("python-docs")
    assert p.kind == "text" and p.table.num_rows > 50
    assert p.extra["cleaning"]["documents_read"] >= p.table.num_rows
    snap = publish(p, tmp_path)
    table = read_table(snap)
    assert table.schema.names == ["id", "split", "text"]
    assert snap.manifest["kind"] == "text"
    assert sorted(text_split(table, "train") + text_split(table, "validation")) == sorted(
        p.table.column("text").to_pylist()
    )
    assert publish(prepare("python-docs"), tmp_path).created is False


def test_unknown_text_dataset_without_a_path(tmp_path):
    with pytest.raises(DataSourceError, match="unknown text dataset 'novels'"):
        load_text("novels")
