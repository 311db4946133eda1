"""Tasks of the data stages: ingest a source into a snapshot, and the data-contract gate.

`ingest` runs the contract on the in-memory table before anything is written, so a dataset that
breaks it never appears under the datasets folder; `validate` re-reads the published snapshot
(checking every part's sha256) and runs the contract again as the flow's gate. Both save the
results as JSON and Data Docs HTML under `<home>/validations/`, log them to MLflow and publish a
Prefect markdown artifact.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from aigc_core import names, progress
from aigc_core.data.ingest import prepare, publish
from aigc_core.data.snapshot import Snapshot, find_snapshot, read_table
from aigc_core.paths import Home
from data_contracts import ContractViolation, ValidationReport, results_dir, validate_snapshot
from tasks import mlflow_adapter

log = logging.getLogger(__name__)


def validations_dir(home: Home) -> Path:
    return results_dir(home.root)


def _retry_on_io(task, task_run, state) -> bool:
    """Retry disk and network hiccups only; bad data fails the same way every time."""
    return isinstance(state.data, OSError)


def _data_docs_page(report: ValidationReport) -> Path | None:
    if not report.data_docs:
        return None
    site = Path(report.data_docs).parent / "validations" / report.suite / report.snapshot_id
    pages = sorted(site.glob("*/*.html"))
    return pages[-1] if pages else None


def _record(report: ValidationReport, home: Home, stage: str) -> None:
    """Publish a contract result: Prefect markdown artifact and an MLflow run with the files."""
    outcome = "passed" if report.success else "failed"
    create_markdown_artifact(
        report.markdown(),
        key="data-contract",
        description=f"data contract of {report.snapshot_id} at {stage}: {outcome}",
    )
    mlflow_adapter.configure(home)
    run_id = mlflow_adapter.start_run(
        f"data-contract-{report.snapshot_id}",
        {"stage": "data-contract", "snapshot_id": report.snapshot_id, "suite": report.suite},
    )
    with mlflow_adapter.run_guard(run_id, finish=True):
        mlflow_adapter.log_params(run_id, {"at": stage, "outcome": outcome})
        mlflow_adapter.log_metrics(
            run_id,
            {
                "rows": report.rows,
                "blocking_failures": len(report.blocking_failures),
                "warnings": len(report.warnings),
            },
        )
        if report.result_json:
            mlflow_adapter.log_artifact(run_id, Path(report.result_json), "data_contract")
        page = _data_docs_page(report)
        if page is not None:
            mlflow_adapter.log_artifact(run_id, page, "data_contract")


def ingest_gated(
    h: Home, dataset: str, *, on_violation=None, **options
) -> tuple[Snapshot, ValidationReport | None]:
    """Read and preprocess a dataset, check its contract on the in-memory table, and publish
    the snapshot only if it passes (idempotent by content): what the ingest task and
    `aigc ingest` both run. options: `aigc_core.data.ingest.prepare`'s. Returns the snapshot and
    the contract's report (None when the same snapshot existed and nothing was checked).
    Raises InvalidName (a dataset name that breaks `aigc_core.names`' rule, checked first),
    DataSourceError (bad input) or ContractViolation (after `on_violation(report)`); either way
    nothing is written."""
    dataset = names.dataset(dataset)
    names.inside(h.datasets, h.datasets / dataset)  # where the snapshot will be written
    names.inside(h.root, h.root / "downloads" / dataset)  # where MNIST files are cached
    prepared = prepare(dataset, downloads=h.root / "downloads", **options)
    reports: list[ValidationReport] = []

    def gate(table, manifest):
        try:
            reports.append(validate_snapshot(table, manifest, results_dir=validations_dir(h)))
        except ContractViolation as e:
            if on_violation is not None:
                on_violation(e.report)
            raise

    snap = publish(prepared, h.datasets, gate=gate)
    return snap, (reports[0] if reports else None)


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_on_io)
def ingest(
    dataset: str,
    home: str,
    validation_fraction: float = 0.2,
    *,
    path: str | None = None,
    kind: str | None = None,
    text_column: str = "text",
    image_size: int | None = None,
    mode: str = "L",
    bad_bytes: str = "reject",
) -> dict:
    """Read a dataset (built-in, or the files at `path`), check it against its contract and
    publish it as a snapshot (idempotent by content). Bad data raises; nothing is written."""
    progress.report("ingest", 0, 1)
    h = Home.resolve(home).ensure()
    snap, _ = ingest_gated(
        h,
        dataset,
        on_violation=lambda report: _record(report, h, "ingest"),
        path=path,
        kind=kind,
        validation_fraction=validation_fraction,
        image_size=image_size,
        mode=mode,
        text_column=text_column,
        bad_bytes=bad_bytes,
    )
    progress.report("ingest", 1, 1)
    return {
        "snapshot_id": snap.id,
        "dataset": snap.name,
        "kind": snap.kind,
        "path": str(snap.path),
        "rows": snap.manifest["num_rows"],
        "created": snap.created,
    }


@task(name="validate")
def validate(snapshot_id: str, home: str) -> dict:
    """Run the snapshot's data contract; a blocking failure raises and stops the flow."""
    progress.report("validate", 0, 1)
    h = Home.resolve(home)
    snap = find_snapshot(h.datasets, snapshot_id)
    try:
        report = validate_snapshot(read_table(snap), snap.manifest, results_dir=validations_dir(h))
    except ContractViolation as e:
        _record(e.report, h, "validate")
        raise
    _record(report, h, "validate")
    progress.report("validate", 1, 1)
    return {
        "snapshot_id": snapshot_id,
        "success": report.success,
        "warnings": [c.describe() for c in report.warnings],
        "results": report.result_json,
        "data_docs": report.data_docs,
    }
