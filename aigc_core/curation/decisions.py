"""What the decision step of every kind shares (`decide_images`, `decide_audio`, `decide_texts`):
each item's reasons, collected check by check; the evaluator's checks of image and audio items;
the guard that memorization was scored before it is judged; and the columns a decided batch
carries (`duplicate_of`, `reason`, `kept`).

An item is kept when no check gave it a reason; a rejected item lists every reason, in the order
the checks ran, so a report can count rejections per reason (`rejected_by_reason`, an item with
two reasons counting in both).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class Reasons:
    """The rejection reasons of each item of a batch of `n`, in the order the checks gave them."""

    def __init__(self, n: int) -> None:
        self._items: list[list[str]] = [[] for _ in range(n)]

    def flag(self, mask, reason: str) -> None:
        """Give `reason` to each item where `mask` ((N,) bools, array or Series) is true."""
        for i in np.flatnonzero(np.asarray(mask)):
            self._items[i].append(reason)

    def decided(self, df: pd.DataFrame, duplicate_of: np.ndarray) -> pd.DataFrame:
        """`df` with the decision columns: `duplicate_of` (the earlier item an item repeats, else
        -1), `reason` (all of an item's reasons, `;`-separated, empty when kept) and `kept`."""
        df["duplicate_of"] = duplicate_of
        df["reason"] = [";".join(r) for r in self._items]
        df["kept"] = df["reason"] == ""
        return df


def flag_evaluator(reasons: Reasons, df: pd.DataFrame, policy) -> None:
    """The evaluator's checks of image and audio items, under an ImagePolicy or AudioPolicy:
    its top-class probability below `min_confidence` is low_confidence; with a
    `requested_label` column and `require_requested_class`, a class asked for and predicted as
    another is wrong_class."""
    if policy.min_confidence is not None:
        low = df["confidence"].to_numpy() < policy.min_confidence
        reasons.flag(low, f"low_confidence<{policy.min_confidence:g}")
    if policy.require_requested_class and "requested_label" in df:
        reasons.flag(wrong_class(df["requested_label"], df["predicted_label"]), "wrong_class")


def wrong_class(requested: pd.Series, predicted: pd.Series) -> np.ndarray:
    """(N,) bool: a class was asked (not null) and the prediction is another one."""
    asked = requested.notna().to_numpy()
    req = requested.fillna(-1).to_numpy(dtype=np.int64)
    return asked & (req != predicted.to_numpy(dtype=np.int64))


def train_scores(df: pd.DataFrame, column: str, setting: str, items: str) -> np.ndarray:
    """The memorization scores in `column`, which the policy's `setting` bounds: a ValueError
    naming both when any of the `items` was scored without the training set (NaN), since a
    missing score cannot be shown to be within the bound."""
    scores = df[column].to_numpy()
    if np.isnan(scores).any():
        raise ValueError(
            f"the policy checks memorization ({setting}) but some {items} have no {column}: "
            "score them against the training set, or set it to null"
        )
    return scores


def rejected_by_reason(reasons: pd.Series) -> dict[str, int]:
    """Counts per reason over rejected items (an item with two reasons counts in both)."""
    r = reasons[reasons != ""]
    if r.empty:
        return {}
    return {str(k): int(v) for k, v in r.str.split(";").explode().value_counts().items()}
