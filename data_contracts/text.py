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
from data_contracts.common import BLOCK, SPLITS, WARN, in_both_splits, meta

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

    bounds = manifest["text_bounds"]
    return [
        # an empty snapshot passes every per-row check below: demand rows
        gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=meta("empty dataset")),
        # training and perplexity both need documents in each split
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="split", value_set=SPLITS, meta=meta("an empty train or validation split")
        ),
        # splits are only these two names
        gxe.ExpectColumnValuesToBeInSet(
            column="split", value_set=SPLITS, meta=meta("unknown split names")
        ),
        # a missing document would reach the tokenizer as None
        gxe.ExpectColumnValuesToBeBetween(
            column="is_null", min_value=0, max_value=0, meta=meta("missing texts")
        ),
        # documents are non-empty and no longer than the reader's bound
        gxe.ExpectColumnValuesToBeBetween(
            column="n_chars",
            min_value=bounds["min_chars"],
            max_value=bounds["max_chars"],
            meta=meta("text length out of bounds"),
        ),
        # ids are content hashes: repeats are exact duplicates, which ingest removes
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="id", min_value=1.0 - MAX_DUPLICATE_RATIO, meta=meta("duplicate ratio")
        ),
        # the same document in train and validation inflates validation scores
        gxe.ExpectColumnValuesToBeBetween(
            column="in_both_splits",
            min_value=0,
            max_value=0,
            meta=meta("train/validation overlap"),
        ),
        # cleaning strips control characters (NUL included)
        gxe.ExpectColumnValuesToBeBetween(
            column="n_control", min_value=0, max_value=0, meta=meta("control characters")
        ),
        # cleaning masks e-mail addresses
        gxe.ExpectColumnValuesToBeBetween(
            column="n_emails", min_value=0, max_value=0, meta=meta("unmasked e-mail addresses")
        ),
        # cleaning masks phone numbers
        gxe.ExpectColumnValuesToBeBetween(
            column="n_phones", min_value=0, max_value=0, meta=meta("unmasked phone numbers")
        ),
        # very short documents teach little; reported, not blocking
        gxe.ExpectColumnMeanToBeBetween(
            column="n_chars", min_value=20, meta=meta("mostly tiny documents", WARN)
        ),
    ]


__all__ = ["BLOCK", "WARN", "expectations", "profile"]
