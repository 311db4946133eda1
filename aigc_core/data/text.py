"""Text sources and their preprocessing.

Sources: the built-in `python-docs` (the documentation topics in the standard library's
`pydoc_data`), plain `.txt` files (one document per paragraph, paragraphs separated by blank
lines), and `.jsonl` / `.csv` / `.parquet` files with a chosen text column. A folder is read file
by file in sorted order. Lines and records are read with a bounded reader: a single huge line is
an error, never a memory blow-up.

Bytes that are not UTF-8, and NUL bytes, follow the `bad_bytes` policy: `reject` (the default)
raises naming the file and line; `replace` substitutes U+FFFD for invalid bytes and drops NULs,
and counts both in the snapshot's manifest.

Preprocessing (`clean_text`, one document): Unicode normalization (NFC by default), line endings
to `\\n`, control characters other than tab and newline removed, e-mail addresses and phone numbers
masked as `<email>` / `<phone>`, surrounding whitespace trimmed; then (`clean_texts`) empty
documents and exact duplicates removed. Every change is counted.

Cleaning runs a block of documents at a time on Arrow arrays, with the same results and counts
as `clean_text` document by document: one numpy pass over the block's bytes finds the documents
a step could change (a byte starting a character that normalization may change, a control
character, `\\r`, `@`, a digit, whitespace at either end); the others are clean already. Each step
then runs on the documents it may change: vectorized with pyarrow.compute (RE2), except Unicode
normalization and phone masking, which use Python's `unicodedata` and `re` on those few. Exact
duplicates are found by sha256, which is also the row id the snapshot stores. A `.txt` file is
read a block of bytes at a time and split into lines and paragraphs by numpy and Arrow.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from aigc_core.data.files import (
    DEFAULT_MAX_LINE_BYTES,
    POOL,
    DataSourceError,
    read_lines,
    require_exists,
    sha256_rows,
    string_buffers,
    walk_files,
)
from aigc_core.memory import release_memory

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
# PHONE in a form Python's regex engine scans fast: it starts with a character class, so the
# search skips to the next '+', '(' or digit, and the look-behind is checked after that first
# character. The same matches (tests/unit/test_text.py compares the two on random text).
PHONE_SCAN = re.compile(
    r"[+(\d](?<![\w.+-][+(\d])"
    r"(?:(?<=\+)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-])"
    r"|(?<=\()\d{1,4}\)[ .-]?"
    r"|(?<=\d)\d{1,3}[ .-])"
    r"\d{3,4}[ .-]\d{3,4}(?![\w.-])"
)
# RE2 (pyarrow.compute) patterns. CONTROL and EMAIL have no look-around, so RE2 reads them as
# Python does and finds the same matches (both take the leftmost match, then the first
# alternative, greedy). PHONE's look-arounds have no RE2 form: RE2 only picks the documents
# holding PHONE's core (every PHONE match contains one), and PHONE_SCAN masks those.
CONTROL_RE2 = CONTROL.pattern
EMAIL_RE2 = EMAIL.pattern
PHONE_CORE_RE2 = r"(?:\(\p{Nd}{1,4}\)[ .-]?|\p{Nd}{2,4}[ .-])\p{Nd}{3,4}[ .-]\p{Nd}{3,4}"
PHONE_CORE_ASCII_RE2 = PHONE_CORE_RE2.replace(r"\p{Nd}", "[0-9]")  # compiles 20x faster
BLOCK_BYTES = 1 << 20  # a .txt file is read this many bytes at a time
CLEAN_BLOCK_BYTES = 1 << 20  # documents from Python strings are cleaned in blocks this big
CLEAN_BLOCK_DOCS = 4096  # ... or this many
ASCII_SPACE = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "


# What a document's bytes say cleaning may have to do (`_Cleaner._suspects`)
NORMALIZE, NEWLINE, CONTROL_BIT, AT, DIGIT_BIT, EDGE = 1, 2, 4, 8, 16, 32
_BITS = np.zeros(256, dtype=np.uint8)  # per byte value; NORMALIZE is set by the form's threshold
_BITS[[*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0xC2]] = CONTROL_BIT  # C1: 0xC2 0x80..
_BITS[0x0D] = NEWLINE
_BITS[0x40] = AT
_BITS[0x30:0x3A] = DIGIT_BIT
_EDGE = np.zeros(256, dtype=bool)  # a first or last byte that may be (part of) whitespace
_EDGE[list(ASCII_SPACE)] = True
_EDGE[0x80:] = True


@dataclass
class TextData:
    docs: pa.ChunkedArray  # one cleaned, unique document per row (string)
    digests: np.ndarray  # (N, 32) uint8: each document's sha256 (its row id in a snapshot)
    source: str
    params: dict = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return self.docs.to_pylist()


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


def _long_line(path: Path, number: int, max_line: int) -> DataSourceError:
    return DataSourceError(
        f"{path}: line {number} is longer than {max_line:,} bytes; split it "
        f"into smaller records or raise the line limit (max_line_bytes)"
    )


def _long_paragraph(path: Path, number: int) -> DataSourceError:
    return DataSourceError(
        f"{path}: the paragraph ending at line {number} is longer than "
        f"{DEFAULT_MAX_DOC_CHARS:,} characters; separate documents with blank lines"
    )


def _read_txt(path: Path, policy: str, max_line: int, counts: Counter) -> Iterator[pa.Array]:
    """The paragraphs (runs of non-blank lines, joined by `\\n`) of a .txt file as string arrays,
    a block at a time: the documents, errors and counts of reading it line by line with
    `read_lines` and `decode`, in memory bounded by a block, one partial line (at most
    `max_line` bytes) and one unfinished paragraph (at most DEFAULT_MAX_DOC_CHARS), which are
    carried into the next block."""
    number = 1  # of the first line in `raw`
    pending = b""  # the unfinished paragraph and partial line the last block ended with
    with open(path, "rb") as f:
        while True:
            chunk = f.read(BLOCK_BYTES)
            eof = not chunk
            raw = pending + chunk if pending else chunk
            if eof:  # what is left ends the file; its last line may have no newline
                if not raw:
                    return
                open_end = not raw.endswith(b"\n")
                end = len(raw) if open_end else len(raw) - 1
            else:
                end, open_end = raw.rfind(b"\n"), False
                if end < 0:  # no line ends in this block yet
                    if len(raw) > max_line:
                        raise _long_line(path, number, max_line)
                    pending = raw
                    continue
            block = _TxtBlock(path, raw, end, open_end, number)
            if raw.find(b"\x00", 0, end) < 0 and raw.find(b"\r", 0, end) < 0 and _utf8(raw, end):
                docs, carry, carried = block.fast(max_line, eof)
            else:
                docs, carry, carried = block.general(max_line, eof, policy, counts)
            if len(docs):
                yield docs
            if eof:
                return
            pending = carry + raw[end + 1 :]
            number += carried
            if len(pending) - len(carry) > max_line:
                raise _long_line(path, number + carry.count(b"\n"), max_line)


def _utf8(raw: bytes, end: int) -> bool:
    """Whether raw[:end] is valid UTF-8 (checked by Arrow, without decoding it)."""
    offsets = pa.py_buffer(np.array([0, end], dtype=np.int32))
    whole = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(raw)])
    try:
        whole.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


_SPACE_START = np.zeros(256, dtype=bool)  # a first byte of a character str.isspace() accepts
_SPACE_START[list(ASCII_SPACE)] = True
_SPACE_START[[0xC2, 0xE1, 0xE2, 0xE3]] = True  # U+0085, U+00A0, U+1680, U+2000.., U+3000


class _TxtBlock:
    """The lines raw[:end] of a .txt file, line `number` first, all ended by a newline but the
    last when `open_end`; split into finished paragraphs and the bytes of the one still open."""

    def __init__(self, path: Path, raw: bytes, end: int, open_end: bool, number: int):
        self.path, self.raw, self.end, self.open_end, self.number = path, raw, end, open_end, number

    def fast(self, max_line: int, eof: bool) -> tuple[pa.Array, bytes, int]:
        """(paragraphs, carry, lines before it) for valid UTF-8 without NUL or CR: every
        paragraph is a contiguous range of `raw`, so numpy finds the ranges and Arrow copies
        them out once."""
        raw, end = self.raw, self.end
        data = np.frombuffer(raw, dtype=np.uint8, count=end)
        newlines = np.flatnonzero(data == 10)
        starts = np.concatenate(([0], newlines + 1))
        ends = np.append(newlines, end)
        lengths = ends - starts
        over = np.flatnonzero(lengths > max_line)
        text = lengths > 0
        maybe = np.flatnonzero(text)
        maybe = maybe[_SPACE_START[data[starts[maybe]]]]  # may be whitespace only: check
        for i in maybe.tolist():
            text[i] = not raw[starts[i] : ends[i]].decode("utf-8").isspace()
        first, stop = _runs(text)
        long_at = self._long_runs(first, stop, lengths, lambda i: raw[starts[i] : ends[i]].decode())
        self._raise_first(over, long_at, max_line)
        carry, carried = b"", len(starts)
        if not eof and first.size and stop[-1] == len(starts):  # the last paragraph goes on
            carry, carried = raw[starts[first[-1]] : end + 1], int(first[-1])
            first, stop = first[:-1], stop[:-1]
        if not first.size:
            return pa.array([], pa.string()), carry, carried
        bounds = np.empty(2 * first.size, dtype=np.int32)
        bounds[0::2], bounds[1::2] = starts[first], ends[stop - 1]
        # strings alternate paragraph, gap, paragraph, ...: keep the even ones
        spans = pa.Array.from_buffers(
            pa.string(),
            len(bounds) - 1,
            [None, pa.py_buffer(bounds.astype(np.int32)), pa.py_buffer(raw)],
        )
        even = pa.array(np.arange(0, len(bounds) - 1, 2, dtype=np.int32))
        return pc.take(spans, even, memory_pool=POOL), carry, carried

    def general(
        self, max_line: int, eof: bool, policy: str, counts: Counter
    ) -> tuple[pa.Array, bytes, int]:
        """(paragraphs, carry, lines before it) for any bytes: lines split by Arrow (or decoded
        one by one under the bad-bytes policy), their trailing CRs dropped, paragraphs joined."""
        raw, end, path, number = self.raw, self.end, self.path, self.number
        over = np.zeros(0, dtype=np.int64)
        if raw.find(b"\x00", 0, end) < 0 and _utf8(raw, end):
            offsets = pa.py_buffer(np.array([0, end], dtype=np.int32))
            whole = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(raw)])
            lines = pc.list_flatten(pc.split_pattern(whole, "\n", memory_pool=POOL))
            over = np.flatnonzero(np.diff(string_buffers(lines)[1]) > max_line)
            ended = lines.slice(0, len(lines) - 1) if self.open_end else lines
            trimmed = pc.utf8_rtrim(ended, characters="\r", memory_pool=POOL)
            if self.open_end:
                trimmed = pa.concat_arrays([trimmed, lines.slice(len(lines) - 1)], POOL)
            lines = trimmed
        else:
            texts = []
            parts = raw[:end].split(b"\n")
            for i, line in enumerate(parts):
                if len(line) > max_line:
                    raise _long_line(path, number + i, max_line)
                text = line if self.open_end and i == len(parts) - 1 else line.rstrip(b"\r")
                texts.append(decode(text, policy, f"{path}: line {number + i}", counts))
            lines = pa.array(texts, pa.string(), memory_pool=POOL)
        _, offsets = string_buffers(lines)
        blank = (np.diff(offsets) == 0) | pc.utf8_is_space(lines).to_numpy(zero_copy_only=False)
        first, stop = _runs(~blank)
        long_at = self._long_runs(first, stop, np.diff(offsets), lambda i: lines[i].as_py())
        self._raise_first(over, long_at, max_line)
        carry, carried = b"", len(lines)
        if not eof and first.size and stop[-1] == len(lines):  # the last paragraph goes on
            carried = int(first[-1])
            carry = ("\n".join(lines.slice(carried).to_pylist()) + "\n").encode("utf-8")
            first, stop = first[:-1], stop[:-1]
        if not first.size:
            return pa.array([], pa.string()), carry, carried
        kept = np.flatnonzero(~blank[: stop[-1]])
        bounds = np.concatenate(([0], np.cumsum(stop - first))).astype(np.int32)
        taken = pc.take(lines, pa.array(kept), memory_pool=POOL)
        paragraphs = pa.ListArray.from_arrays(pa.array(bounds), taken, pool=POOL)
        return pc.binary_join(paragraphs, "\n", memory_pool=POOL), carry, carried

    def _long_runs(
        self, first: np.ndarray, stop: np.ndarray, nbytes: np.ndarray, line_text
    ) -> int | None:
        """The first line at which a paragraph grows over DEFAULT_MAX_DOC_CHARS characters (a
        character has at least one byte, so only runs over that many bytes are counted)."""
        total = np.concatenate(([0], np.cumsum(nbytes)))
        big = np.flatnonzero(total[stop] - total[first] > DEFAULT_MAX_DOC_CHARS)
        for a, b in zip(first[big].tolist(), stop[big].tolist(), strict=True):
            size = 0
            for i in range(a, b):
                size += len(line_text(i))
                if size > DEFAULT_MAX_DOC_CHARS:
                    return self.number + i
        return None

    def _raise_first(self, over: np.ndarray, long_at: int | None, max_line: int) -> None:
        """The error the line-by-line reader meets first: a line over `max_line` bytes or a
        paragraph over DEFAULT_MAX_DOC_CHARS."""
        line_at = self.number + int(over[0]) if over.size else None
        if long_at is not None and (line_at is None or long_at < line_at):
            raise _long_paragraph(self.path, long_at)
        if line_at is not None:
            raise _long_line(self.path, line_at, max_line)


def _runs(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, stop): where each run of True in `text` starts and ends (exclusive): the lines
    of each paragraph."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], text, [False])).astype(np.int8)))
    return edges[0::2], edges[1::2]


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


def read_document_blocks(
    path: Path,
    text_column: str = "text",
    bad_bytes: str = "reject",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    counts: Counter | None = None,
) -> Iterator[pa.Array]:
    """Raw documents from a file or a folder of text files (sorted), as string arrays."""
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
            docs = _read_jsonl(f, text_column, bad_bytes, max_line_bytes, counts)
            yield from _blocks(docs, str(f))
        elif suffix == ".csv":
            docs = _read_csv(f, text_column, bad_bytes, max_line_bytes, counts)
            yield from _blocks(docs, str(f))
        elif suffix == ".parquet":
            yield from _blocks(_read_parquet(f, text_column, bad_bytes, counts), str(f))
        else:
            raise DataSourceError(
                f"{f}: unknown text format {suffix!r}; use one of {', '.join(TEXT_SUFFIXES)}"
            )


def read_documents(
    path: Path,
    text_column: str = "text",
    bad_bytes: str = "reject",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    counts: Counter | None = None,
) -> Iterator[str]:
    """Raw documents from a file or a folder of text files (sorted)."""
    for block in read_document_blocks(path, text_column, bad_bytes, max_line_bytes, counts):
        yield from block.to_pylist()


def _blocks(documents: Iterable[str], where: str) -> Iterator[pa.Array]:
    """Python strings as string arrays of about CLEAN_BLOCK_BYTES each."""
    batch: list[str] = []
    size = 0
    for doc in documents:
        batch.append(doc)
        size += len(doc)
        if size >= CLEAN_BLOCK_BYTES or len(batch) >= CLEAN_BLOCK_DOCS:
            yield _string_array(batch, where)
            batch, size = [], 0
    if batch:
        yield _string_array(batch, where)


def _string_array(texts: list[str], where: str) -> pa.Array:
    try:
        return pa.array(texts, pa.string(), memory_pool=POOL)
    except (pa.ArrowException, UnicodeEncodeError) as e:
        raise DataSourceError(
            f"{where}: a document is not valid Unicode text ({e}); fix the source"
        ) from None
    except TypeError:
        bad = next(t for t in texts if not isinstance(t, str))
        raise DataSourceError(f"{where}: a document is a {type(bad).__name__}, not text") from None


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


class _Cleaner:
    """`clean_text` over blocks of documents, empty documents dropped; `result` then drops the
    exact duplicates (equal sha256), keeping the first of each, and gives the documents with
    their digests. A context manager: it owns the thread that hashes."""

    def __init__(self, form: str, max_chars: int, counts: Counter, where: str):
        self.form, self.max_chars, self.counts, self.where = form, max_chars, counts, where
        self.threshold = np.uint8(0xCC if form == "NFC" else 0x80)
        self.docs: list[pa.Array] = []
        self.digests: list[Future] = []  # of (N, 32) uint8
        # hashing holds the GIL, Arrow's and numpy's kernels release it: one thread hashes a
        # block while the next is read and cleaned
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")

    def __enter__(self) -> _Cleaner:
        return self

    def __exit__(self, *exc) -> None:
        self.hasher.shutdown(wait=True, cancel_futures=True)

    def add(self, docs: pa.Array) -> None:
        if docs.null_count:
            raise DataSourceError(f"{self.where}: a document is missing (null)")
        read = self.counts["documents_read"]
        self.counts["documents_read"] += len(docs)
        for key in ("control_chars_removed", "emails_masked", "phones_masked"):
            self.counts[key] += 0
        bits = self._suspects(*string_buffers(docs))
        suspect = bits.astype(bool)
        if suspect.all():
            docs = self._clean(docs, bits)
        elif suspect.any():
            mask = pa.array(suspect)
            fixed = self._clean(pc.filter(docs, mask, memory_pool=POOL), bits[suspect])
            docs = pc.replace_with_mask(docs, mask, fixed, memory_pool=POOL)
        # lengths in characters where bytes cannot tell (a character has 1 to 4 bytes)
        chars = np.diff(string_buffers(docs)[1])
        unsure = np.flatnonzero((chars > self.max_chars) | (chars < 4 * MIN_DOC_CHARS))
        if unsure.size:
            some = pc.take(docs, pa.array(unsure), memory_pool=POOL)
            chars[unsure] = pc.utf8_length(some).to_numpy(zero_copy_only=False)
        over = np.flatnonzero(chars > self.max_chars)
        if over.size:
            i = int(over[0])
            raise DataSourceError(
                f"{self.where}: document {read + i + 1} has {int(chars[i]):,} characters, "
                f"over the {self.max_chars:,} limit; split it into smaller documents"
            )
        empty = chars < MIN_DOC_CHARS
        if empty.any():
            self.counts["empty_removed"] += int(empty.sum())
            docs = pc.filter(docs, pa.array(~empty), memory_pool=POOL)
        if len(docs):
            self.docs.append(docs)
            self.digests.append(self.hasher.submit(sha256_rows, *string_buffers(docs)))

    def result(self) -> tuple[pa.ChunkedArray, np.ndarray]:
        """(documents, their sha256 (N, 32) uint8), exact duplicates removed (the first kept)."""
        done = [f.result() for f in self.digests]
        digests = np.concatenate([np.empty((0, 32), dtype=np.uint8), *done])
        repeat = _repeats(digests)
        if not repeat.any():
            return pa.chunked_array(self.docs, pa.string()), digests
        self.counts["duplicates_removed"] += int(repeat.sum())
        chunks, start = [], 0
        self.docs.reverse()
        while self.docs:  # one chunk at a time, each released once filtered
            chunk = self.docs.pop()
            keep = ~repeat[start : start + len(chunk)]
            start += len(chunk)
            chunks.append(chunk if keep.all() else pc.filter(chunk, keep, memory_pool=POOL))
            del chunk
        return pa.chunked_array(chunks, pa.string()), digests[~repeat]

    def _suspects(self, data: pa.Buffer | bytes, offsets: np.ndarray) -> np.ndarray:
        """Per document, the steps of `clean_text` that may change it (bits: NORMALIZE, NEWLINE,
        CONTROL_BIT, AT, DIGIT_BIT, EDGE), from its bytes; 0: the document is clean as it is.
        A character that NFC may change starts with a byte >= 0xCC (other forms: any non-ASCII
        one), and so does every non-ASCII digit."""
        n = len(offsets) - 1
        lo, hi = int(offsets[0]), int(offsets[-1])
        d = np.frombuffer(data, dtype=np.uint8, count=hi - lo, offset=lo) if hi > lo else None
        bits = np.zeros(n, dtype=np.uint8)
        if d is None:
            return bits
        hit = d < 0x20  # (and tab, newline: dropped below)
        hit |= d - np.uint8(0x30) <= 0x10  # digits to '@' (and :;<=>?: dropped below)
        hit |= d == 0x7F
        hit |= d == 0xC2
        hit |= d >= self.threshold
        where = np.flatnonzero(hit)
        if where.size:
            values = d[where]
            found = _BITS[values] | np.where(values >= self.threshold, NORMALIZE | DIGIT_BIT, 0)
            some = found > 0
            rows = np.searchsorted(offsets, where[some] + lo, "right") - 1
            np.bitwise_or.at(bits, rows, found[some])
        full = np.flatnonzero(offsets[1:] > offsets[:-1])
        edge = _EDGE[d[offsets[full] - lo]] | _EDGE[d[offsets[full + 1] - 1 - lo]]
        bits[full[edge]] |= EDGE
        return bits

    def _clean(self, docs: pa.Array, bits: np.ndarray) -> pa.Array:
        """`clean_text` of each document, step by step (the same order and counts), each step
        vectorized over the documents whose `bits` say it may change them."""

        def normalize(texts: pa.Array, rows: np.ndarray) -> pa.Array:
            before = texts.to_pylist()
            after = [unicodedata.normalize(self.form, t) for t in before]
            changed = np.array([a != b for a, b in zip(after, before, strict=True)], dtype=bool)
            bits[rows[changed]] = 0xFF  # new text: every later step may apply
            return pa.array(after, pa.string(), memory_pool=POOL)

        def newlines(texts: pa.Array, rows: np.ndarray) -> pa.Array:
            texts = pc.replace_substring(texts, "\r\n", "\n", memory_pool=POOL)
            return pc.replace_substring(texts, "\r", "\n", memory_pool=POOL)

        def regex(pattern: str, mask: str, key: str):
            def step(texts: pa.Array, rows: np.ndarray) -> pa.Array:
                found = pc.count_substring_regex(texts, pattern, memory_pool=POOL)
                if n := pc.sum(found).as_py():
                    self.counts[key] += n
                    return pc.replace_substring_regex(texts, pattern, mask, memory_pool=POOL)
                return texts

            return step

        def phones(texts: pa.Array, rows: np.ndarray) -> pa.Array:
            # a non-ASCII digit only where a byte >= the NORMALIZE threshold is
            core = PHONE_CORE_RE2 if (bits[rows] & NORMALIZE).any() else PHONE_CORE_ASCII_RE2
            like = pc.match_substring_regex(texts, core, memory_pool=POOL)
            if not pc.any(like).as_py():
                return texts
            masked = []
            for text in pc.filter(texts, like, memory_pool=POOL).to_pylist():
                text, k = PHONE_SCAN.subn("<phone>", text)
                self.counts["phones_masked"] += k
                masked.append(text)
            masked = pa.array(masked, pa.string(), memory_pool=POOL)
            return pc.replace_with_mask(texts, like, masked, memory_pool=POOL)

        steps = (
            (NORMALIZE, normalize),
            (NEWLINE, newlines),
            (CONTROL_BIT, regex(CONTROL_RE2, "", "control_chars_removed")),
            (AT, regex(EMAIL_RE2, "<email>", "emails_masked")),
            (DIGIT_BIT, phones),
        )
        for bit, step in steps:
            selected = (bits & bit).astype(bool)
            rows = np.flatnonzero(selected)
            if not rows.size:
                continue
            if rows.size == len(docs):
                docs = step(docs, rows)
            else:
                mask = pa.array(selected)
                done = step(pc.filter(docs, mask, memory_pool=POOL), rows)
                docs = pc.replace_with_mask(docs, mask, done, memory_pool=POOL)
        return pc.utf8_trim_whitespace(docs, memory_pool=POOL)


def _repeats(digests: np.ndarray) -> np.ndarray:
    """Which rows of (N, 32) `digests` repeat an earlier row."""
    n = len(digests)
    head = digests[:, :8].copy().view(np.uint64).reshape(n)
    order = np.argsort(head, kind="stable")  # equal digests stay in reading order
    ranked = digests[order]
    same = np.all(ranked[1:] == ranked[:-1], axis=1)
    repeat = np.zeros(n, dtype=bool)
    repeat[order[1:][same]] = True
    mixed = (head[order][1:] == head[order][:-1]) & ~same  # equal first 8 bytes, not all 32
    if mixed.any():  # then equal digests need not be neighbours: compare them exactly
        seen: set[bytes] = set()
        for i, row in enumerate(digests):
            key = row.tobytes()
            repeat[i] = key in seen
            seen.add(key)
    return repeat


def clean_texts(
    documents,
    form: str = "NFC",
    max_chars: int = DEFAULT_MAX_DOC_CHARS,
    counts: Counter | None = None,
    where: str = "input",
) -> tuple[list[str], Counter]:
    """Clean, then drop empty documents and exact duplicates (keeping the first)."""
    counts = counts if counts is not None else Counter()
    with _Cleaner(form, max_chars, counts, where) as cleaner:
        for block in _blocks(documents, where):
            cleaner.add(block)
        return cleaner.result()[0].to_pylist(), counts


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
        where = "pydoc_data.topics"
        blocks = _blocks(python_docs_documents(), where)
        source = "pydoc_data.topics (Python documentation topics, standard library)"
    else:
        path = Path(path)
        blocks = read_document_blocks(path, text_column, bad_bytes, max_line_bytes, counts)
        source = f"text files {path.resolve()}"
        where = str(path)
    with _Cleaner(unicode_form, DEFAULT_MAX_DOC_CHARS, counts, where) as cleaner:
        for block in blocks:
            cleaner.add(block)
        docs, digests = cleaner.result()
    release_memory()  # what reading and cleaning freed, before the snapshot is written
    if not len(docs):
        raise DataSourceError(f"{where}: no documents left after cleaning; the dataset is empty")
    log.info("read %d documents from %s: %s", len(docs), where, dict(counts))
    params = {
        "unicode_form": unicode_form,
        "mask": ["email", "phone"],
        "dedupe": "exact",
        "bad_bytes": bad_bytes,
        "max_chars": DEFAULT_MAX_DOC_CHARS,
    }
    if path is not None:
        params["text_column"] = text_column
    return TextData(docs=docs, digests=digests, source=source, params=params, stats=dict(counts))
