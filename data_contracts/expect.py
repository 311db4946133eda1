"""Builders of the expectations the suites make in the same form: GX's expectation with our
`meta` (what it guards, `common.guards`), so that a suite reads as its list of checks, e.g.
`expect.equals("height", h, "wrong height", "Every image is 28 pixels high.")`.

Suites call them as `expect.NAME`. Each imports GX when called, as the suites' `expectations`
do: its import costs seconds, which importing `data_contracts` (e.g. for `ContractViolation`)
does not pay.
"""

from __future__ import annotations

from data_contracts.common import SPLITS, WARNING, guards


def has_rows(description: str):
    """At least one row: every per-row check passes on an empty snapshot."""
    import great_expectations.expectations as gxe

    return gxe.ExpectTableRowCountToBeBetween(
        min_value=1, description=description, meta=guards("empty dataset")
    )


def both_splits(noun: str, plural: str) -> list:
    """Rows in both splits (training and evaluation need each), and in no split of another name."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="split",
            value_set=SPLITS,
            description=f"Both the train and the validation split hold {plural}.",
            meta=guards("an empty train or validation split"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="split",
            value_set=SPLITS,
            description=f"Every {noun} is in the train or the validation split, no other.",
            meta=guards("unknown split names"),
        ),
    ]


def declared_labels(noun: str, labels: list) -> list:
    """Every row has a label (the evaluator cannot score an unlabeled row), and it is one of the
    manifest's `labels` (others break the classifier head)."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(
            column="label",
            description=f"Every {noun} has a label: the evaluator cannot score an unlabeled one.",
            meta=guards("missing labels"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="label",
            value_set=labels,
            description="Every label is in the label set the manifest declares.",
            meta=guards("labels out of range"),
        ),
    ]


def few_repeats(noun: str, plural: str, max_ratio: float) -> list:
    """Ids are content hashes, so a repeated id is an exact duplicate: more than `max_ratio` of
    them blocks (a model trained on mostly repeats learns to copy them), any is reported."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="id",
            min_value=1.0 - max_ratio,
            description=(
                f"At most {max_ratio:.0%} of the {plural} are repeats: "
                "a model trained on mostly repeats learns to copy them."
            ),
            meta=guards("duplicate ratio"),
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="id",
            severity=WARNING,
            description=f"Each {noun} appears once; a few exact repeats are reported, not blocked.",
            meta=guards(f"duplicate {plural}"),
        ),
    ]


def equals(column: str, value, guard: str, description: str):
    """Every row's `column` is `value` (the one the manifest declares)."""
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeInSet(
        column=column, value_set=[value], description=description, meta=guards(guard)
    )


def between(column: str, guard: str, description: str, **bounds):
    """Every row's `column` within `bounds`: GX's min_value, max_value, mostly, and severity."""
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeBetween(
        column=column, description=description, meta=guards(guard), **bounds
    )


def zero(column: str, guard: str, description: str):
    """A per-row count that must be 0 in every row (a flag: 0 or 1, or a count of faults)."""
    return between(column, guard, description, min_value=0, max_value=0)
