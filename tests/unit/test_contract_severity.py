"""The gate decides blocking vs warning from Great Expectations' own `severity` field, and every
expectation of our suites carries GX's `description` (what Data Docs shows)."""

import logging

import pandas as pd
import pyarrow.compute as pc
import pytest

from aigc_core.data.snapshot import text_table
from data_contracts import ContractViolation, images, text, validate_snapshot
from data_contracts.gate import run_suite

IMAGE_MANIFEST = {"image_shape": [1, 8, 8], "label_set": list(range(10))}
TEXT_BOUNDS = {"text_bounds": {"min_chars": 1, "max_chars": 200}}
TEXT_MANIFEST = {"id": "sev", "kind": "text", **TEXT_BOUNDS}


def _suite(module, manifest):
    return {e.meta["guards"]: e for e in module.expectations(manifest)}


@pytest.mark.parametrize(
    "module, manifest, warning",
    [(images, IMAGE_MANIFEST, "duplicate images"), (text, TEXT_BOUNDS, "mostly tiny documents")],
)
def test_suites_use_gx_severity_and_description_fields(module, manifest, warning):
    suite = _suite(module, manifest)
    severities = {g: e.severity.value for g, e in suite.items()}
    assert severities.pop(warning) == "warning"
    assert set(severities.values()) == {"critical"}
    for g, e in suite.items():
        assert e.description and e.description[0].isupper() and e.description.endswith("."), g
        assert "$" not in e.description  # GX renders it as a template: `$x` would be a parameter
        assert set(e.meta) == {"guards"}, f"{g}: meta holds only our label, not the severity"


def _frame():
    return pd.DataFrame({"x": [1, 2, 3]})


def _over_two(**fields):
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeBetween(column="x", max_value=2, **fields)


def test_a_warning_severity_failure_passes_the_gate_as_a_warning():
    report = run_suite(_frame(), "sev_warn", [_over_two(severity="warning")], "s1")
    (check,) = report.checks
    assert not check.success and check.severity == "warning"
    assert report.success and report.warnings == [check] and not report.blocking_failures


def test_a_critical_severity_failure_blocks():
    report = run_suite(_frame(), "sev_crit", [_over_two(severity="critical")], "s2")
    (check,) = report.checks
    assert check.severity == "critical" and report.blocking_failures == [check]
    assert not report.success


def test_gx_default_severity_blocks_and_meta_severity_is_ignored():
    """An expectation without a severity is GX's default, critical; an old-style
    `meta={"severity": "warn"}` no longer softens it."""
    report = run_suite(_frame(), "sev_meta", [_over_two(meta={"severity": "warn"})], "s3")
    assert report.checks[0].severity == "critical" and not report.success


def test_an_info_severity_failure_is_reported_not_blocking():
    report = run_suite(_frame(), "sev_info", [_over_two(severity="info")], "s4")
    assert report.success and [c.severity for c in report.warnings] == ["info"]


def test_the_gate_raises_only_on_critical_failures(caplog):
    caplog.set_level(logging.WARNING, logger="data_contracts.gate")
    tiny = text_table([f"w{i}" for i in range(60)])  # fails only the warning (mean length)
    report = validate_snapshot(tiny, TEXT_MANIFEST)
    assert report.success and [c.severity for c in report.warnings] == ["warning"]
    assert "data contract warning: [warning]" in caplog.text
    train_only = tiny.filter(pc.equal(tiny.column("split"), "train"))
    with pytest.raises(ContractViolation) as e:  # a critical failure (an empty split) raises
        validate_snapshot(train_only, TEXT_MANIFEST)
    assert [c.guards for c in e.value.report.blocking_failures] == [
        "an empty train or validation split"
    ]
    assert [c.severity for c in e.value.report.blocking_failures] == ["critical"]
