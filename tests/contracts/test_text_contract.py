"""The text data contract: a good snapshot passes, each kind of corruption is caught, and the
results are saved as JSON and Data Docs HTML."""

import json
from pathlib import Path

import pyarrow as pa
import pytest

from aigc_core.data.snapshot import TEXT_SCHEMA, text_table
from data_contracts import ContractViolation, validate_snapshot

MANIFEST = {"id": "t", "kind": "text", "text_bounds": {"min_chars": 1, "max_chars": 200}}
DOCS = [f"document {i}: some words about topic {i % 7}, long enough" for i in range(80)]


def failed(table, manifest=MANIFEST) -> str:
    with pytest.raises(ContractViolation) as e:
        validate_snapshot(table, manifest)
    return str(e.value)


def replace(table: pa.Table, column: str, values) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def test_a_good_snapshot_passes():
    report = validate_snapshot(text_table(DOCS), MANIFEST)
    assert report.success and not report.warnings
    assert len(report.checks) >= 10
    # GX's own severity and description fields, read back from the results
    assert all(c.severity in ("critical", "warning") and c.guards for c in report.checks)
    assert all(c.description.endswith(".") for c in report.checks)


def test_an_empty_snapshot_is_blocked():
    assert "empty dataset" in failed(text_table(DOCS).slice(0, 0))


def test_an_empty_split_is_blocked():
    table = text_table(DOCS)
    train_only = table.filter(pa.compute.equal(table.column("split"), "train"))
    msg = failed(train_only)
    assert "an empty train or validation split" in msg and "validation" in msg


def test_overlap_between_splits_is_blocked():
    table = text_table(DOCS)
    splits = table.column("split").to_pylist()
    j = splits.index("validation")
    rows = table.to_pylist()
    rows.append({**rows[j], "split": "train"})  # the same document in both splits
    msg = failed(pa.Table.from_pylist(rows, schema=TEXT_SCHEMA))
    assert "train/validation overlap" in msg and "2 rows unexpected" in msg


def test_duplicates_are_blocked():
    table = text_table(DOCS + DOCS[:1])
    assert "duplicate ratio" in failed(table)


def test_text_length_bounds():
    long = text_table(DOCS + ["x" * 201])
    assert "text length out of bounds" in failed(long)
    empty = replace(text_table(DOCS), "text", [""] + DOCS[1:])
    assert "text length out of bounds" in failed(empty)


def test_missing_texts_are_blocked():
    schema = pa.schema([f.with_nullable(True) for f in TEXT_SCHEMA])
    table = text_table(DOCS).cast(schema)
    nulls = replace(table, "text", [None] + DOCS[1:])
    assert "missing texts" in failed(nulls)


@pytest.mark.parametrize(
    "doc, guard",
    [
        ("a NUL\x00 slipped through", "control characters"),
        ("mail me at someone@example.org please", "unmasked e-mail addresses"),
        ("ring 555-867-5309 tonight", "unmasked phone numbers"),
    ],
)
def test_uncleaned_text_is_blocked(doc, guard):
    assert guard in failed(replace(text_table(DOCS), "text", [doc] + DOCS[1:]))


def test_tiny_documents_only_warn():
    report = validate_snapshot(text_table([f"w{i}" for i in range(60)]), MANIFEST)
    assert report.success and [c.guards for c in report.warnings] == ["mostly tiny documents"]


def test_results_are_saved_as_json_and_data_docs(tmp_path):
    report = validate_snapshot(text_table(DOCS), MANIFEST, results_dir=tmp_path)
    saved = json.loads(Path(report.result_json).read_text())
    assert saved["success"] is True and saved["snapshot_id"] == "t"
    assert len(saved["checks"]) == len(report.checks)
    assert report.data_docs.endswith("index.html")
    pages = list((tmp_path / "gx/uncommitted/data_docs/local_site/validations").rglob("*.html"))
    assert pages and "text_snapshot" in pages[0].read_text()
    # the validation's page as one file, for MLflow: it carries its scripts and styles
    page = Path(report.data_docs_page).read_text()
    assert report.data_docs_page.endswith("t-text_snapshot.html") and "bootstrapTable" in page
    assert "jQuery" in page and "<script src=" not in page
    # a failing run is saved too, before the gate raises
    with pytest.raises(ContractViolation) as e:
        validate_snapshot(text_table(DOCS[:1]), {**MANIFEST, "id": "bad"}, results_dir=tmp_path)
    bad = json.loads(Path(e.value.report.result_json).read_text())
    assert bad["success"] is False and bad["blocking_failures"] == 1
