"""Text sources and their preprocessing.

Sources: the built-in `python-docs` (the documentation topics in the standard library's
`pydoc_data`), plain `.txt` files (one document per paragraph, paragraphs separated by blank
lines), and `.jsonl` / `.csv` / `.parquet` files with a chosen text column. A folder is read file
by file in sorted order. Lines and records are read with a bounded reader: a single huge line is
an error, never a memory blow-up.

Bytes that are not UTF-8, and NUL bytes, follow the `bad_bytes` policy: `reject` (the default)
raises naming the file and line; `replace` substitutes U+FFFD for invalid bytes and drops NULs,
and counts both in the snapshot's manifest.

Preprocessing (`clean_texts`): Unicode normalization (NFC by default), line endings to `\\n`,
control characters other than tab and newline removed, e-mail addresses and phone numbers masked
as `<email>` / `<phone>`, surrounding whitespace trimmed, empty documents and exact duplicates
removed. Every change is counted.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from aigc_core.data.files import (
    DEFAULT_MAX_LINE_BYTES,
    DataSourceError,
    read_lines,
    require_exists,
    walk_files,
)

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
BAD_BYTES = ("reject", "replace")
DEFAULT_MAX_DOC_CHARS = 1_000_000
MIN_DOC_CHARS = 1

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# three digit groups (e.g. 555-123-4567, (020) 7946 0958, +44 20 7946 0958); two groups such as
# year ranges (1999-2000) and dotted versions (3.11.2) do not match
PHONE = re.compile(
    r"(?<![\w.+-])(?:\+\d{1,3}[ .-]?)?"
    r"(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w.-])"
)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
DIGIT = re.compile(r"\d")


@dataclass
class TextData:
    texts: list[str]  # one document per item, cleaned and unique
    source: str
    params: dict = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- reading


def decode(raw: bytes, policy: str, where: str, counts: Counter) -> str:
    """UTF-8 bytes -> str under the bad-bytes policy (see the module docstring)."""
    if b"\x00" in raw:
        if policy == "reject":
            raise DataSourceError(
                f"{where}: contains NUL bytes; remove them, or ingest with "
                f"--bad-bytes replace to drop and count them"
            )
        counts["nul_bytes_removed"] += raw.count(b"\x00")
        raw = raw.replace(b"\x00", b"")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if policy == "reject":
            raise DataSourceError(
                f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                f"convert the file to UTF-8, or ingest with --bad-bytes replace"
            ) from None
    parts, pos = [], 0
    while True:
        try:
            parts.append(raw[pos:].decode("utf-8"))
            return "".join(parts)
        except UnicodeDecodeError as e:
            parts.append(raw[pos : pos + e.start].decode("utf-8") + "\ufffd")
            counts["invalid_utf8_replaced"] += 1
            pos += e.end


def _read_txt(path: Path, policy: str, max_line: int, counts: Counter) -> Iterator[str]:
    paragraph: list[str] = []
    size = 0
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
            yield "\n".join(paragraph)
            paragraph, size = [], 0
    if paragraph:
        yield "\n".join(paragraph)


def _value_text(value, column: str, where: str) -> str:
    if value is None:
        raise DataSourceError(
            f"{where}: {column!r} is missing (null); drop the record or fill in its text"
        )
    if not isinstance(value, str):
        raise DataSourceError(
            f"{where}: {column!r} is a {type(value).__name__} ({value!r}), not text; "
            f"choose the text column with --text-column"
        )
    return value


def _read_jsonl(
    path: Path, column: str, policy: str, max_line: int, counts: Counter
) -> Iterator[str]:
    for number, raw in enumerate(read_lines(path, max_line), start=1):
        if not raw.strip():
            continue
        where = f"{path}: line {number}"
        line = decode(raw, policy, where, counts)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataSourceError(f"{where}: not valid JSON ({e.msg}); fix the record") from None
        if not isinstance(record, dict):
            raise DataSourceError(f"{where}: a JSON {type(record).__name__}, expected an object")
        if column not in record:
            raise DataSourceError(
                f"{where}: no {column!r} field (fields: {', '.join(sorted(record)) or 'none'}); "
                f"choose the text column with --text-column"
            )
        yield _value_text(record[column], column, where)


def _check_column(path: Path, schema: pa.Schema, column: str) -> None:
    if column not in schema.names:
        raise DataSourceError(
            f"{path}: no column {column!r} (columns: {', '.join(schema.names)}); "
            f"choose the text column with --text-column"
        )
    t = schema.field(column).type
    if not (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string_view(t)
    ):
        raise DataSourceError(
            f"{path}: column {column!r} holds {t} values, not text; choose the text column "
            f"with --text-column"
        )


def _binary_values(
    path: Path,
    array: pa.ChunkedArray | pa.Array,
    column: str,
    offset: int,
    policy: str,
    counts: Counter,
) -> Iterator[str]:
    nulls = array.null_count
    if nulls:
        first = offset + next(i for i, v in enumerate(array.is_null().to_pylist()) if v)
        raise DataSourceError(
            f"{path}: column {column!r} has {nulls} missing value(s), first at row {first}; "
            f"drop those rows or fill in their text"
        )
    for i, raw in enumerate(array.cast(pa.large_binary()).to_pylist()):
        if len(raw) > 4 * DEFAULT_MAX_DOC_CHARS:
            raise DataSourceError(
                f"{path}: row {offset + i} of {column!r} is {len(raw):,} bytes, over the "
                f"{4 * DEFAULT_MAX_DOC_CHARS:,}-byte limit of one document; split it"
            )
        yield decode(raw, policy, f"{path}: row {offset + i}", counts)


def _read_csv(
    path: Path, column: str, policy: str, max_line: int, counts: Counter
) -> Iterator[str]:
    read = pacsv.ReadOptions(block_size=max(max_line, 1 << 16))
    try:
        header = pacsv.open_csv(path, read_options=read).schema
        _check_column(path, header, column)  # a numeric column is inferred as numbers here
        reader = pacsv.open_csv(
            path,
            read_options=read,
            convert_options=pacsv.ConvertOptions(
                column_types={column: pa.binary()}, include_columns=[column]
            ),
        )
        offset = 0
        for batch in reader:
            yield from _binary_values(path, batch.column(0), column, offset, policy, counts)
            offset += batch.num_rows
    except pa.ArrowInvalid as e:
        raise DataSourceError(
            f"{path}: cannot be read as CSV ({e}); a record longer than {max_line:,} bytes or "
            f"a malformed row is the usual cause"
        ) from None


def _read_parquet(path: Path, column: str, policy: str, counts: Counter) -> Iterator[str]:
    try:
        f = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataSourceError(f"{path}: not a readable Parquet file ({e})") from None
    _check_column(path, f.schema_arrow, column)
    offset = 0
    for batch in f.iter_batches(batch_size=1024, columns=[column]):
        yield from _binary_values(path, batch.column(0), column, offset, policy, counts)
        offset += batch.num_rows


def read_documents(
    path: Path,
    text_column: str = "text",
    bad_bytes: str = "reject",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    counts: Counter | None = None,
) -> Iterator[str]:
    """Raw documents from a file or a folder of text files (sorted)."""
    if bad_bytes not in BAD_BYTES:
        raise DataSourceError(f"unknown bad-bytes policy {bad_bytes!r}; choose one of {BAD_BYTES}")
    counts = counts if counts is not None else Counter()
    path = require_exists(Path(path))
    files = walk_files(path, TEXT_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataSourceError(
            f"{path}: no text files found (looked for {', '.join(TEXT_SUFFIXES)})"
        )
    for f in files:
        suffix = f.suffix.lower()
        if f.stat().st_size == 0:
            raise DataSourceError(f"{f}: the file is empty (0 bytes); remove it or fill it")
        counts["files"] += 1
        if suffix == ".txt":
            yield from _read_txt(f, bad_bytes, max_line_bytes, counts)
        elif suffix == ".jsonl":
            yield from _read_jsonl(f, text_column, bad_bytes, max_line_bytes, counts)
        elif suffix == ".csv":
            yield from _read_csv(f, text_column, bad_bytes, max_line_bytes, counts)
        elif suffix == ".parquet":
            yield from _read_parquet(f, text_column, bad_bytes, counts)
        else:
            raise DataSourceError(
                f"{f}: unknown text format {suffix!r}; use one of {', '.join(TEXT_SUFFIXES)}"
            )


def python_docs_documents() -> list[str]:
    """The Python documentation topics shipped in the standard library, sorted by topic."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


# --------------------------------------------------------------------------- preprocessing


def clean_text(text: str, form: str, counts: Counter) -> str:
    text = unicodedata.normalize(form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text, n = CONTROL.subn("", text)
    counts["control_chars_removed"] += n
    n = 0
    if "@" in text:  # every e-mail address has one: skip the (slow) scan where none can match
        text, n = EMAIL.subn("<email>", text)
    counts["emails_masked"] += n
    n = 0
    if _has_digit(text):  # likewise, every phone number has digits
        text, n = PHONE.subn("<phone>", text)
    counts["phones_masked"] += n
    return text.strip()


def _has_digit(text: str) -> bool:
    """Whether `text` has a decimal digit (as `\\d` has it: non-ASCII digits count too)."""
    if text.isascii():
        return any(d in text for d in "0123456789")
    return DIGIT.search(text) is not None


def clean_texts(
    documents,
    form: str = "NFC",
    max_chars: int = DEFAULT_MAX_DOC_CHARS,
    counts: Counter | None = None,
    where: str = "input",
) -> tuple[list[str], Counter]:
    """Clean, then drop empty documents and exact duplicates (keeping the first)."""
    counts = counts if counts is not None else Counter()
    seen: set[str] = set()
    out: list[str] = []
    for doc in documents:
        counts["documents_read"] += 1
        text = clean_text(doc, form, counts)
        if len(text) < MIN_DOC_CHARS:
            counts["empty_removed"] += 1
            continue
        if len(text) > max_chars:
            raise DataSourceError(
                f"{where}: document {counts['documents_read']} has {len(text):,} characters, "
                f"over the {max_chars:,} limit; split it into smaller documents"
            )
        if text in seen:
            counts["duplicates_removed"] += 1
            continue
        seen.add(text)
        out.append(text)
    return out, counts


def load_text(
    name: str,
    path: Path | None = None,
    text_column: str = "text",
    bad_bytes: str = "reject",
    unicode_form: str = "NFC",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> TextData:
    """Read and clean a text dataset: the built-in `python-docs`, or the files at `path`."""
    counts: Counter = Counter()
    if path is None:
        if name != "python-docs":
            raise DataSourceError(
                f"unknown text dataset {name!r}; built-in: python-docs, or give --path"
            )
        docs = python_docs_documents()
        source = "pydoc_data.topics (Python documentation topics, standard library)"
        where = "pydoc_data.topics"
    else:
        path = Path(path)
        docs = read_documents(path, text_column, bad_bytes, max_line_bytes, counts)
        source = f"text files {path.resolve()}"
        where = str(path)
    texts, counts = clean_texts(docs, unicode_form, counts=counts, where=where)
    if not texts:
        raise DataSourceError(f"{where}: no documents left after cleaning; the dataset is empty")
    log.info("read %d documents from %s: %s", len(texts), where, dict(counts))
    params = {
        "unicode_form": unicode_form,
        "mask": ["email", "phone"],
        "dedupe": "exact",
        "bad_bytes": bad_bytes,
        "max_chars": DEFAULT_MAX_DOC_CHARS,
    }
    if path is not None:
        params["text_column"] = text_column
    return TextData(texts=texts, source=source, params=params, stats=dict(counts))
