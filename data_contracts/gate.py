"""The gate: run a snapshot's suite with Great Expectations and raise on blocking failures.

GX returns success=False without raising; this module is where a failed contract becomes an
exception, so the flow stops and nothing downstream runs.

Whether a failure blocks is GX's own `severity` of the expectation (`critical` blocks; `warning`
and `info` are reported), read from each result's `expectation_config`.

With a `results_dir`, the run uses a file-backed GX project there: each validation is stored as
GX's JSON, rendered into Data Docs (`gx/uncommitted/data_docs/local_site/index.html`) that read
offline (`data_docs.make_offline`), and our own summary is written as
`results/<snapshot-id>-<suite>.json` with the validation's page as one self-contained file beside
it, `results/<snapshot-id>-<suite>.html` (both atomically). Without one, everything stays in
memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa

from aigc_core.atomic import naming_full_disk, write_bytes_atomic
from data_contracts import audio, data_docs, images, text
from data_contracts.common import CRITICAL, INFO

log = logging.getLogger(__name__)

SUITES = {"image": images, "text": text, "audio": audio}


@dataclass
class Check:
    expectation: str
    column: str | None
    guards: str
    severity: str  # GX's: critical (blocks), warning or info (reported)
    success: bool
    description: str = ""
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
    validated_at: str = ""
    result_json: str | None = None  # our summary, when saved
    data_docs: str | None = None  # GX Data Docs index.html, when saved
    data_docs_page: str | None = None  # this validation's page as one self-contained file

    @property
    def blocking_failures(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity == CRITICAL]

    @property
    def warnings(self) -> list[Check]:
        """Failures of non-critical expectations: reported, the run goes on."""
        return [c for c in self.checks if not c.success and c.severity != CRITICAL]

    @property
    def success(self) -> bool:
        return not self.blocking_failures

    def to_dict(self) -> dict:
        return {
            "snapshot_id": self.snapshot_id,
            "suite": self.suite,
            "rows": self.rows,
            "success": self.success,
            "validated_at": self.validated_at,
            "blocking_failures": len(self.blocking_failures),
            "warnings": len(self.warnings),
            "data_docs": self.data_docs,
            "data_docs_page": self.data_docs_page,
            "checks": [
                {k: (v if k != "observed" else repr(v)) for k, v in c.__dict__.items()}
                for c in self.checks
            ],
        }

    def markdown(self) -> str:
        lines = [
            f"# Data contract `{self.suite}` on snapshot `{self.snapshot_id}`",
            f"{self.rows} rows; **{'passed' if self.success else 'FAILED'}**",
            *([f"Data Docs: `{self.data_docs}`"] if self.data_docs else []),
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


def _plain(value):
    """numpy scalars as Python numbers, so reports read `7.0`, not `np.float64(7.0)`."""
    return value.item() if hasattr(value, "item") and not isinstance(value, list | dict) else value


def _context(results_dir: Path | None):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if results_dir is None:
        ctx = gx.get_context(mode="ephemeral")
    else:
        results_dir.mkdir(parents=True, exist_ok=True)
        ctx = gx.get_context(mode="file", project_root_dir=str(results_dir))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def _severity(cfg) -> str:
    """GX's own severity of an expectation, as its string value (GX's default: critical)."""
    value = getattr(cfg.severity, "value", cfg.severity)
    return str(value) if value else CRITICAL


def _save_docs(ctx, key, report: ValidationReport, out_dir: Path) -> None:
    """Make the Data Docs site read offline and save this validation's page, self-contained,
    as `<out_dir>/<snapshot-id>-<suite>.html`; record both paths on the report."""
    (index_url,) = (u["site_url"] for u in ctx.get_docs_sites_urls())
    base = index_url.removesuffix("index.html")  # file://<site folder>/
    site = Path(base.removeprefix("file://"))
    if not (site / "index.html").is_file():
        return
    data_docs.make_offline(site)
    report.data_docs = str(site / "index.html")
    pages = ctx.get_docs_sites_urls(resource_identifier=key, only_if_exists=True)
    if pages:
        # GX %-quotes the part of a page's URL below the site, not the site's own path
        page = site / unquote(pages[0]["site_url"].removeprefix(base))
        out = out_dir / f"{report.snapshot_id}-{report.suite}.html"
        write_bytes_atomic(out, data_docs.standalone_page(page).encode("utf-8"))
        report.data_docs_page = str(out)


def run_suite(
    df: pd.DataFrame,
    suite_name: str,
    expectations: list,
    snapshot_id: str,
    results_dir: Path | None = None,
) -> ValidationReport:
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    ctx = _context(results_dir)
    source = ctx.data_sources.add_or_update_pandas(suite_name)
    asset = next((a for a in source.assets if a.name == suite_name), None)
    asset = asset or source.add_dataframe_asset(suite_name)
    batch = next((b for b in asset.batch_definitions if b.name == suite_name), None)
    batch = batch or asset.add_batch_definition_whole_dataframe(suite_name)
    suite = ctx.suites.add_or_update(
        gx.ExpectationSuite(name=suite_name, expectations=list(expectations))
    )
    vd = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    actions = [] if results_dir is None else [gx.checkpoint.UpdateDataDocsAction(name="docs")]
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[vd],
            actions=actions,
            result_format="SUMMARY",
        )
    )
    now = datetime.now(UTC)
    outcome = checkpoint.run(
        batch_parameters={"dataframe": df},
        run_id=RunIdentifier(run_name=snapshot_id, run_time=now),
    )
    ((key, result),) = outcome.run_results.items()
    checks = []
    for r in result.results:
        cfg, res = r.expectation_config, r.result or {}
        checks.append(
            Check(
                expectation=cfg.type,
                column=cfg.kwargs.get("column"),
                guards=(cfg.meta or {}).get("guards", ""),
                severity=_severity(cfg),
                success=bool(r.success),
                description=cfg.description or "",
                unexpected_count=res.get("unexpected_count"),
                # set checks report what is missing instead of an observed value
                observed=(
                    {"missing": res.get("partial_missing_list")}
                    if res.get("missing_count")
                    else _plain(res.get("observed_value"))
                ),
                examples=list(res.get("partial_unexpected_list") or [])[:5],
            )
        )
    report = ValidationReport(
        snapshot_id, suite_name, len(df), checks, now.isoformat(timespec="seconds")
    )
    if results_dir is not None:
        _save_docs(ctx, key, report, results_dir / "results")
        out = results_dir / "results" / f"{snapshot_id}-{suite_name}.json"
        write_bytes_atomic(out, json.dumps(report.to_dict(), indent=2, default=str).encode())
        report.result_json = str(out)
    return report


def validate_snapshot(
    table: pa.Table, manifest: dict, results_dir: str | Path | None = None
) -> ValidationReport:
    """Validate a snapshot table against its kind's suite; raise ContractViolation on a blocking
    failure, log warnings otherwise, and return the report. With `results_dir`, the results are
    saved there as JSON and Data Docs HTML (also when the contract fails)."""
    kind = manifest["kind"]
    if kind not in SUITES:
        raise ValueError(f"no data contract for snapshot kind {kind!r}; known: {sorted(SUITES)}")
    module = SUITES[kind]
    results = Path(results_dir) if results_dir is not None else None
    # GX writes its Data Docs there: a full disk names that folder
    with naming_full_disk(results) if results is not None else contextlib.nullcontext():
        report = run_suite(
            module.profile(table),
            f"{kind}_snapshot",
            module.expectations(manifest),
            manifest["id"],
            results,
        )
    for c in report.warnings:
        level = logging.INFO if c.severity == INFO else logging.WARNING
        log.log(level, "data contract %s: %s", c.severity, c.describe())
    if not report.success:
        raise ContractViolation(report)
    return report
