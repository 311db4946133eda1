"""The gate: run a snapshot's suite with Great Expectations and raise on blocking failures.

GX returns success=False without raising; this module is where a failed contract becomes an
exception, so the flow stops and nothing downstream runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from data_contracts import images

log = logging.getLogger(__name__)

SUITES = {"image": images}


@dataclass
class Check:
    expectation: str
    column: str | None
    guards: str
    severity: str
    success: bool
    unexpected_count: int | None = None
    observed: object = None
    examples: list = field(default_factory=list)

    def describe(self) -> str:
        where = f" on column {self.column!r}" if self.column else ""
        detail = (
            f"{self.unexpected_count} rows unexpected"
            if self.unexpected_count is not None
            else f"observed {self.observed!r}"
        )
        ex = f", e.g. {self.examples[:3]}" if self.examples else ""
        return f"[{self.severity}] {self.expectation}{where} ({self.guards}): {detail}{ex}"


@dataclass
class ValidationReport:
    snapshot_id: str
    suite: str
    rows: int
    checks: list[Check]

    @property
    def blocking_failures(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity == images.BLOCK]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity != images.BLOCK]

    @property
    def success(self) -> bool:
        return not self.blocking_failures

    def to_dict(self) -> dict:
        return {
            "snapshot_id": self.snapshot_id,
            "suite": self.suite,
            "rows": self.rows,
            "success": self.success,
            "checks": [
                {k: (v if k != "observed" else repr(v)) for k, v in c.__dict__.items()}
                for c in self.checks
            ],
        }

    def markdown(self) -> str:
        lines = [
            f"# Data contract `{self.suite}` on snapshot `{self.snapshot_id}`",
            f"{self.rows} rows; **{'passed' if self.success else 'FAILED'}**",
            "",
            "| result | severity | expectation | column | guards | unexpected |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            lines.append(
                f"| {'ok' if c.success else 'FAIL'} | {c.severity} | {c.expectation} | "
                f"{c.column or ''} | {c.guards} | {c.unexpected_count or ''} |"
            )
        return "\n".join(lines)


class ContractViolation(Exception):
    """A snapshot broke a blocking expectation of its data contract."""

    def __init__(self, report: ValidationReport):
        self.report = report
        failed = "\n".join(f"  - {c.describe()}" for c in report.blocking_failures)
        super().__init__(
            f"snapshot {report.snapshot_id} failed its data contract "
            f"'{report.suite}' ({len(report.blocking_failures)} blocking "
            f"expectation(s) failed):\n{failed}"
        )


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def run_suite(
    df: pd.DataFrame, suite_name: str, expectations: list, snapshot_id: str
) -> ValidationReport:
    import great_expectations as gx

    ctx = _context()
    batch = (
        ctx.data_sources.add_pandas(suite_name)
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe(suite_name)
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name))
    for e in expectations:
        suite.add_expectation(e)
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    result = vd.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    checks = []
    for r in result.results:
        cfg, res = r.expectation_config, r.result or {}
        checks.append(
            Check(
                expectation=cfg.type,
                column=cfg.kwargs.get("column"),
                guards=(cfg.meta or {}).get("guards", ""),
                severity=(cfg.meta or {}).get("severity", images.BLOCK),
                success=bool(r.success),
                unexpected_count=res.get("unexpected_count"),
                observed=res.get("observed_value"),
                examples=list(res.get("partial_unexpected_list") or [])[:5],
            )
        )
    return ValidationReport(snapshot_id, suite_name, len(df), checks)


def validate_snapshot(table: pa.Table, manifest: dict) -> ValidationReport:
    """Validate a snapshot table against its kind's suite; raise ContractViolation on a blocking
    failure, log warnings otherwise, and return the report."""
    kind = manifest["kind"]
    if kind not in SUITES:
        raise ValueError(f"no data contract for snapshot kind {kind!r}; known: {sorted(SUITES)}")
    module = SUITES[kind]
    report = run_suite(
        module.profile(table), f"{kind}_snapshot", module.expectations(manifest), manifest["id"]
    )
    for c in report.warnings:
        log.warning("data contract warning: %s", c.describe())
    if not report.success:
        raise ContractViolation(report)
    return report
