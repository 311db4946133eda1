"""Tasks of the data stages: ingest a source into a snapshot, and the data-contract gate.

`ingest` checks the contract on the in-memory table before anything is written, so a dataset
that breaks it never appears under the datasets folder; `validate` re-reads the snapshot (its
parts' sha256 checked once per process) and checks it again as the flow's gate. Both save the
results under `<home>/validations/`, log them on a tracked run, publish a Prefect artifact and
hand on the snapshot's `SnapshotRef`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from aigc_core import names, progress, stages
from aigc_core.data.ingest import prepare, publish
from aigc_core.data.snapshot import Snapshot, open_snapshot, read_table
from aigc_core.paths import Home
from aigc_core.stages import SnapshotRef
from data_contracts import ContractViolation, ValidationReport, results_dir, validate_snapshot
from tasks.tracking import Tracker


def _retry_on_io(task, task_run, state) -> bool:
    """Retry disk and network hiccups only; bad data fails the same way every time."""
    return isinstance(state.data, OSError)


def _data_docs_page(report: ValidationReport) -> Path | None:
    """The validation's Data Docs page as one self-contained file: the MLflow UI shows an
    artifact from a blob URL, where the site's relative asset links would not resolve."""
    return Path(report.data_docs_page) if report.data_docs_page else None


def _record(
    report: ValidationReport, home: Home, stage: str, parent_run_id: str | None = None
) -> None:
    """Publish a contract result: a Prefect markdown artifact, and a tracked run with the files."""
    outcome = "passed" if report.success else "failed"
    create_markdown_artifact(
        report.markdown(),
        key="data-contract",
        description=f"data contract of {report.snapshot_id} at {stage}: {outcome}",
    )
    tracker = Tracker(home)
    tags = stages.tags(stage="data-contract", snapshot_id=report.snapshot_id, suite=report.suite)
    run_id = tracker.start_run(f"data-contract-{report.snapshot_id}", tags, parent_run_id)
    with tracker.run(run_id, finish=True):
        tracker.log_params(run_id, {"at": stage, "outcome": outcome})
        failures, warnings = len(report.blocking_failures), len(report.warnings)
        metrics = {"rows": report.rows, "blocking_failures": failures, "warnings": warnings}
        tracker.log_metrics(run_id, metrics)
        for path in (report.result_json, _data_docs_page(report)):
            if path:
                tracker.log_artifact(run_id, Path(path), "data_contract")


def ingest_gated(
    h: Home, dataset: str, *, on_violation=None, **options
) -> tuple[Snapshot, ValidationReport | None]:
    """Prepare a dataset (`aigc_core.data.ingest.prepare`'s options), check its contract on the
    in-memory table and publish it only if it passes: the ingest task's and `aigc ingest`'s work.
    Returns the snapshot and the report (None: the same snapshot existed). Raises InvalidName,
    DataSourceError or ContractViolation (after `on_violation(report)`): nothing written."""
    dataset = names.dataset(dataset)
    names.inside(h.datasets, h.datasets / dataset)  # where the snapshot will be written
    names.inside(h.root, h.root / "downloads" / dataset)  # where MNIST files are cached
    prepared = prepare(dataset, downloads=h.root / "downloads", **options)
    reports: list[ValidationReport] = []

    def gate(table, manifest):
        try:
            reports.append(validate_snapshot(table, manifest, results_dir=results_dir(h.root)))
        except ContractViolation as e:
            if on_violation is not None:
                on_violation(e.report)
            raise

    snap = publish(prepared, h.datasets, gate=gate)
    return snap, (reports[0] if reports else None)


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_on_io)
def ingest(dataset: str, home: str, path: str | None = None, **options) -> SnapshotRef:
    """Read a dataset (built-in, or the files at `path`), check it against its contract and
    publish it as a snapshot (idempotent by content). Bad data raises; nothing is written.
    options: `aigc_core.data.ingest.prepare`'s (validation_fraction, kind, image_size, ...)."""
    progress.report("ingest", 0, 1)
    h = Home.resolve(home).ensure()
    record = functools.partial(_record, home=h, stage="ingest")
    snap, _ = ingest_gated(h, dataset, on_violation=record, path=path, **options)
    progress.report("ingest", 1, 1)
    return snap.ref()


@task(name="validate")
def validate(snapshot: SnapshotRef, home: str, parent_run_id: str | None = None) -> SnapshotRef:
    """Run the snapshot's data contract; a blocking failure raises and stops the flow. The
    contract's MLflow run nests under `parent_run_id` (the pipeline run) when given."""
    progress.report("validate", 0, 1)
    h = Home.resolve(home)
    snap = open_snapshot(snapshot)
    try:
        report = validate_snapshot(read_table(snap), snap.manifest, results_dir=results_dir(h.root))
    except ContractViolation as e:
        _record(e.report, h, "validate", parent_run_id)
        raise
    _record(report, h, "validate", parent_run_id)
    progress.report("validate", 1, 1)
    return snapshot
