"""The contract for text snapshots.

GX validates a per-document profile (split, length, leftover control characters and personal
data) rather than the texts themselves, so every property is a plain column check. One
expectation per property; the comment names what it guards.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from aigc_core.data.text import CONTROL, EMAIL, PHONE
from data_contracts import expect
from data_contracts.common import CRITICAL, WARNING, guards, in_both_splits

MAX_DUPLICATE_RATIO = 0.0  # exact duplicates are removed at ingest: any left is a bug


def _count(pattern, texts: list) -> np.ndarray:
    """Matches per document, with the same (Python) patterns the cleaning step uses."""
    return np.array([len(pattern.findall(t)) if t else 0 for t in texts], dtype=np.int64)


def profile(table: pa.Table) -> pd.DataFrame:
    """One row per document with the columns the suite checks."""
    texts = table.column("text")
    values = texts.to_pylist()
    ids = table.column("id").to_pandas()
    splits = table.column("split").to_pandas()
    return pd.DataFrame(
        {
            "id": ids,
            "split": splits,
            "is_null": texts.is_null().to_numpy(zero_copy_only=False).astype("int64"),
            "n_chars": pc.utf8_length(texts).to_numpy(zero_copy_only=False),
            "n_control": _count(CONTROL, values),
            "n_emails": _count(EMAIL, values),
            "n_phones": _count(PHONE, values),
            "in_both_splits": in_both_splits(ids, splits),
        }
    )


def expectations(manifest: dict) -> list:
    """The suite for a text snapshot whose manifest declares its length bounds."""
    import great_expectations.expectations as gxe

    lo, hi = manifest["text_bounds"]["min_chars"], manifest["text_bounds"]["max_chars"]
    return [
        # an empty snapshot passes every per-row check below: demand rows
        expect.has_rows("The snapshot has at least one document (per-row checks pass on none)."),
        # training and perplexity both need documents in each split, and splits have two names
        *expect.both_splits("document", "documents"),
        # a missing document would reach the tokenizer as None
        expect.zero(
            "is_null",
            "missing texts",
            "No document is missing: it would reach the tokenizer as None.",
        ),
        # documents are non-empty and no longer than the reader's bound
        expect.between(
            "n_chars",
            "text length out of bounds",
            f"Every document is {lo} to {hi} characters long (the reader's bounds).",
            min_value=lo,
            max_value=hi,
        ),
        # ids are content hashes: repeats are exact duplicates, which ingest removes
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="id",
            min_value=1.0 - MAX_DUPLICATE_RATIO,
            description="No document is repeated: ingest removes exact duplicates.",
            meta=guards("duplicate ratio"),
        ),
        # the same document in train and validation inflates validation scores
        expect.zero(
            "in_both_splits",
            "train/validation overlap",
            "No document is in both splits: that would inflate validation scores.",
        ),
        # cleaning strips control characters (NUL included) and masks personal data
        expect.zero(
            "n_control",
            "control characters",
            "No control character (NUL included) is left after cleaning.",
        ),
        expect.zero(
            "n_emails",
            "unmasked e-mail addresses",
            "No e-mail address is left unmasked after cleaning.",
        ),
        expect.zero(
            "n_phones",
            "unmasked phone numbers",
            "No phone number is left unmasked after cleaning.",
        ),
        # very short documents teach little; reported, not blocking
        gxe.ExpectColumnMeanToBeBetween(
            column="n_chars",
            min_value=20,
            severity=WARNING,
            description="Documents average 20 characters or more; tiny ones are reported.",
            meta=guards("mostly tiny documents"),
        ),
    ]


__all__ = ["CRITICAL", "WARNING", "expectations", "profile"]
