"""Text sources and preprocessing: readers, cleaning, dedupe, content-hash splits."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from aigc_core.data import text as text_module
from aigc_core.data.files import DataSourceError, read_lines
from aigc_core.data.ingest import prepare, publish
from aigc_core.data.snapshot import SnapshotError, read_table, text_split, text_table
from aigc_core.data.text import (
    DEFAULT_MAX_DOC_CHARS,
    PHONE,
    PHONE_CORE_RE2,
    PHONE_SCAN,
    clean_text,
    clean_texts,
    decode,
    load_text,
    read_documents,
)


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


# --------------------------------------------------------------------------- the block paths
# Cleaning and .txt reading run a block at a time on Arrow arrays; these compare them with the
# one-document, one-line definitions (`clean_text`, and `read_lines` + `decode`) on random input.

PIECES = [
    "word", "Über", "café", "Cafe\u0301", "\u212b", "ﬁ", "Ｆｕｌｌ", "\uff20", "x", "_", ".", "-",
    "+", "(", ")", " ", "  ", "\t", "\n", "\r", "\r\n", "\x00", "\x07", "\x1b", "\x85", "\x9f",
    "\xa0", "\u3000", "\u2028", "@", "a.b@mail.example.org", "jane+x@ex.co", "555-123-4567",
    "(020) 7946 0958", "+44 20 7946 0958", "+4420 7946 0958", "1999-2000", "3.11.2", "1234",
    "12", "٣٤٥-٦٧٨-٩٠١٢", "5", "0", "<email>", "<phone>", "😀", "\u0300",
]  # fmt: skip


def random_docs(rng, n):
    return ["".join(rng.choice(PIECES, size=rng.integers(0, 12))) for _ in range(n)]


def reference_clean(docs, form="NFC"):
    counts, seen, out = Counter(), set(), []
    for doc in docs:
        counts["documents_read"] += 1
        text = clean_text(doc, form, counts)
        if not text:
            counts["empty_removed"] += 1
        elif text in seen:
            counts["duplicates_removed"] += 1
        else:
            seen.add(text)
            out.append(text)
    return out, counts


@pytest.mark.parametrize("form", ["NFC", "NFKC", "NFD"])
def test_block_cleaning_matches_clean_text(form):
    rng = np.random.default_rng(7)
    docs = random_docs(rng, 3000)
    docs += docs[:50]  # exact repeats
    assert clean_texts(docs, form) == reference_clean(docs, form)


def test_cleaning_a_block_of_clean_documents_changes_nothing():
    docs = [
        f"plain document number {chr(97 + i % 26)} with café and naïve words." for i in range(99)
    ]
    texts, counts = clean_texts(docs)
    assert texts == docs[:26] and counts["duplicates_removed"] == 73
    assert counts["emails_masked"] == counts["phones_masked"] == 0


def test_the_fast_phone_pattern_matches_the_readable_one():
    rng = np.random.default_rng(3)
    alphabet = list("0123456789  .-+()_ax٣") + ["\u00e9", "12", "555", "+44", "(020)"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 30))) for _ in range(20_000)]
    for text in texts:
        assert PHONE_SCAN.subn("<phone>", text) == PHONE.subn("<phone>", text), repr(text)
    # RE2 picks the documents to mask: every one PHONE masks holds its core
    cores = pc.match_substring_regex(pa.array(texts), PHONE_CORE_RE2).to_pylist()
    assert all(core for text, core in zip(texts, cores, strict=True) if PHONE.search(text))


def test_nfc_leaves_every_character_below_u0300_alone():
    # why a document without a UTF-8 lead byte >= 0xCC skips normalization
    seconds = set()  # characters that can combine with the one before them
    for c in range(0x110000):
        parts = unicodedata.decomposition(chr(c)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            seconds.add(int(parts[1], 16))
    for c in range(0x300):
        ch = chr(c)
        assert unicodedata.normalize("NFC", ch) == ch and not unicodedata.combining(ch)
        assert c not in seconds
    assert min(0x1161, min(seconds)) >= 0x300  # Hangul vowels combine algorithmically


def reference_txt(path, policy="reject", max_line=1 << 20):
    """The line-by-line reader the block reader replaced."""
    counts, docs, paragraph, size = Counter(), [], [], 0
    for number, raw in enumerate(read_lines(path, max_line), start=1):
        line = decode(raw, policy, f"{path}: line {number}", counts)
        if line.strip():
            paragraph.append(line)
            size += len(line)
            if size > DEFAULT_MAX_DOC_CHARS:
                raise DataSourceError(
                    f"{path}: the paragraph ending at line {number} is longer than "
                    f"{DEFAULT_MAX_DOC_CHARS:,} characters; separate documents with blank lines"
                )
        elif paragraph:
            docs.append("\n".join(paragraph))
            paragraph, size = [], 0
    if paragraph:
        docs.append("\n".join(paragraph))
    return docs, counts


def outcome(read):
    try:
        return read()
    except DataSourceError as e:
        return str(e)


LINES = [
    b"", b"", b"plain line", b"caf\xc3\xa9 cr\xc3\xa8me", b"   ", b"\t", b"\xe3\x80\x80",
    b"\xc2\xa0", b"trailing cr\r", b"two crs\r\r", b"\r", b"in\rside", b"  indented",
    b"\xc2\x85", b"x" * 40, b"\xf0\x9f\x98\x80 emoji",
]  # fmt: skip
BAD = [b"caf\xe9", b"nul\x00byte", b"\xff\xfe", b"cut \xc3"]


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
@pytest.mark.parametrize("policy", ["reject", "replace"])
def test_the_txt_block_reader_matches_the_line_reader(tmp_path, monkeypatch, block, policy):
    monkeypatch.setattr(text_module, "BLOCK_BYTES", block)
    rng = np.random.default_rng(block)
    for case in range(60):
        lines = [LINES[i] for i in rng.integers(0, len(LINES), size=rng.integers(1, 30))]
        if case % 3 == 0:
            lines[int(rng.integers(len(lines)))] = BAD[case % len(BAD)]
        end = [b"", b"\n", b"\r\n", b"\n\n"][case % 4]
        f = tmp_path / f"case{case}.txt"
        f.write_bytes(b"\n".join(lines) + end)
        counts = Counter()
        got = outcome(
            lambda f=f, c=counts: (list(read_documents(f, bad_bytes=policy, counts=c)), c)
        )
        want = outcome(lambda f=f: reference_txt(f, policy))
        if isinstance(want, str):
            assert got == want, f.read_bytes()
            continue
        keys = ("invalid_utf8_replaced", "nul_bytes_removed")
        assert got[0] == want[0], f.read_bytes()
        assert {k: got[1][k] for k in keys} == {k: want[1][k] for k in keys}


@pytest.mark.parametrize("block", [1000, 1 << 20])
def test_long_lines_and_paragraphs_are_refused_where_the_line_reader_refuses_them(
    tmp_path, monkeypatch, block
):
    monkeypatch.setattr(text_module, "BLOCK_BYTES", block)
    cases = {
        "line.txt": b"ok\n\n" + b"y" * 3000 + b"\nafter\n",
        "partial.txt": b"ok\n\nfine\n" + b"z" * 3000,
        "paragraph.txt": b"start\n" + (b"a" * 900 + b"\n") * 5 + b"\nnext\n",
        "both.txt": (b"b" * 900 + b"\n") * 3 + b"c" * 2000 + b"\n",
    }
    monkeypatch.setattr(text_module, "DEFAULT_MAX_DOC_CHARS", 2500)
    for name, content in cases.items():
        f = tmp_path / name
        f.write_bytes(content)
        with monkeypatch.context() as m:
            m.setattr(sys.modules[__name__], "DEFAULT_MAX_DOC_CHARS", 2500)
            want = outcome(lambda f=f: reference_txt(f, max_line=1500))
        got = outcome(lambda f=f: (list(read_documents(f, max_line_bytes=1500)), Counter()))
        assert isinstance(want, str) and got == want, name
