"""What every suite shares: severities, the meta of an expectation, split overlap."""

from __future__ import annotations

import pandas as pd

BLOCK, WARN = "block", "warn"
SPLITS = ["train", "validation"]


def meta(guards: str, severity: str = BLOCK) -> dict:
    """An expectation's meta: what it guards and whether a failure stops the run."""
    return {"guards": guards, "severity": severity}


def in_both_splits(ids: pd.Series, splits: pd.Series) -> pd.Series:
    """1 for rows whose id also appears in the other split, else 0."""
    per_id = pd.DataFrame({"id": ids, "split": splits}).groupby("id")["split"].transform("nunique")
    return (per_id > 1).astype("int64")
