"""Which class each generated image is asked to be: the `--labels` option of a conditional model.

A request names its labels as a spec, turned by `parse_labels` into a *pattern*: item i of a
batch is asked for `pattern[i % len(pattern)]` (`item_labels`), so any run of consecutive items
(a shard, a served request) holds the same mix. Specs:

- `""` (or None): no request; a conditional model spreads its items over its classes in turn;
- `"7"`: every item a 7;
- `"3,7"`: 3s and 7s in turn;
- `"3:0.7,7:0.3"` (or integer weights, `"3:7,7:3"`): a class mix; the pattern holds
  `MIX_PERIOD` items whose counts follow the weights (largest remainder), interleaved so that
  every stretch of items holds close to the mix.

A labels file (`load_labels_file`) holds one spec per line (blank lines and `#` comments are
skipped), joined with commas: e.g. one label per line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MIX_PERIOD = 100  # items in the pattern of a class mix
MAX_PATTERN = 100_000  # labels a spec or file may list
_INT = re.compile(r"[+-]?\d+")


class LabelsError(ValueError):
    """A labels spec that is malformed or that the model cannot honour."""


def parse_labels(spec: str | Sequence[int] | None, num_classes: int) -> tuple[int, ...]:
    """The pattern of `spec` for a model with `num_classes` classes (0: unconditional, which
    takes no labels). Raises `LabelsError` naming the bad part."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return ()
    if num_classes < 1:
        raise LabelsError(
            f"labels {_show(spec)} asked of an unconditional model: train a conditional one "
            "(e.g. a *-conditional preset) or leave --labels out"
        )
    if not isinstance(spec, str):
        pattern = tuple(_label(str(v), num_classes) for v in spec)
    else:
        parts = [p.strip() for p in spec.split(",")]
        if any(not p for p in parts):
            raise LabelsError(f"labels {spec!r}: an empty item; separate labels with commas")
        if any(":" in p for p in parts):
            pattern = _mix(parts, num_classes, spec)
        else:
            pattern = tuple(_label(p, num_classes) for p in parts)
    if not pattern:
        return ()
    if len(pattern) > MAX_PATTERN:
        raise LabelsError(f"labels: {len(pattern)} given, at most {MAX_PATTERN}")
    return pattern


def item_labels(pattern: Sequence[int], start: int, stop: int) -> np.ndarray | None:
    """The labels asked of items start..stop-1 (int64), or None when nothing is asked."""
    if not pattern:
        return None
    return np.asarray(pattern, np.int64)[np.arange(start, stop) % len(pattern)]


def balanced(n: int, num_classes: int) -> np.ndarray:
    """Labels for n items when none were asked of a conditional model: the classes in turn."""
    return np.arange(n, dtype=np.int64) % num_classes


def load_labels_file(path: Path) -> str:
    """The spec a labels file holds: its lines (one or more labels or `label:weight` items
    each) joined with commas. A file that is missing or not UTF-8 text raises `LabelsError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"labels file {path}: {e}") from e
    lines = [ln.split("#", 1)[0].strip().strip(",") for ln in text.splitlines()]
    spec = ",".join(ln for ln in lines if ln)
    if not spec:
        raise LabelsError(f"labels file {path} holds no labels")
    return spec


def counts(pattern: Sequence[int], n: int) -> dict[int, int]:
    """How many of n items ask for each label."""
    if not pattern:
        return {}
    values, numbers = np.unique(item_labels(pattern, 0, n), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, numbers, strict=True)}


def _label(text: str, num_classes: int) -> int:
    text = text.strip()
    if not _INT.fullmatch(text):
        raise LabelsError(f"label {text!r} is not a class index (an integer)")
    value = int(text)
    if not 0 <= value < num_classes:
        raise LabelsError(
            f"label {value} is out of range: the model knows classes 0..{num_classes - 1}"
        )
    return value


def _mix(parts: list[str], num_classes: int, spec: str) -> tuple[int, ...]:
    weights: dict[int, float] = {}
    for part in parts:
        label, sep, weight = part.partition(":")
        if not sep:
            raise LabelsError(f"labels {spec!r}: give every item of a mix a weight (label:weight)")
        cls = _label(label, num_classes)
        try:
            w = float(weight)
        except ValueError:
            raise LabelsError(
                f"labels {spec!r}: weight {weight.strip()!r} is not a number"
            ) from None
        if not np.isfinite(w) or w < 0:
            raise LabelsError(f"labels {spec!r}: weight {weight.strip()!r} must be >= 0")
        if cls in weights:
            raise LabelsError(f"labels {spec!r}: label {cls} is listed twice")
        weights[cls] = w
    total = sum(weights.values())
    if total <= 0:
        raise LabelsError(f"labels {spec!r}: the weights add up to 0")
    share = {c: MIX_PERIOD * w / total for c, w in weights.items()}
    count = {c: int(s) for c, s in share.items()}
    left = MIX_PERIOD - sum(count.values())
    for c in sorted(share, key=lambda c: (count[c] - share[c], c))[:left]:
        count[c] += 1
    # smooth weighted round robin: each class appears as evenly spread as its count allows
    credit = dict.fromkeys(count, 0)
    pattern = []
    for _ in range(MIX_PERIOD):
        for c in credit:
            credit[c] += count[c]
        best = max(credit, key=lambda c: (credit[c], -c))
        credit[best] -= MIX_PERIOD
        pattern.append(best)
    return tuple(pattern)


def _show(spec) -> str:
    return repr(spec) if isinstance(spec, str) else repr(list(spec))
