"""What every suite shares: severities, the label of what an expectation guards, split overlap.

Severity and the human sentence are Great Expectations' own expectation fields (`severity`,
`description`): GX stores them with the suite, returns them on each result's
`expectation_config`, and Data Docs shows the description in place of its generated text. The
gate reads the severity from there. `meta` keeps only our short label of what a check guards,
which names the check in errors and reports.
"""

from __future__ import annotations

import pandas as pd

# GX's FailureSeverity values: a critical failure stops the run, the others are reported
CRITICAL, WARNING, INFO = "critical", "warning", "info"
SPLITS = ["train", "validation"]


def guards(label: str) -> dict:
    """An expectation's meta: the short name of what it guards (e.g. "missing labels")."""
    return {"guards": label}


def in_both_splits(ids: pd.Series, splits: pd.Series) -> pd.Series:
    """1 for rows whose id also appears in the other split, else 0."""
    per_id = pd.DataFrame({"id": ids, "split": splits}).groupby("id")["split"].transform("nunique")
    return (per_id > 1).astype("int64")
