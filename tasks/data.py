"""Tasks of the data stages: ingest a source into a snapshot, and the data-contract gate."""

from __future__ import annotations

import logging

from prefect import task
from prefect.artifacts import create_markdown_artifact

from aigc_core import progress
from aigc_core.data.snapshot import find_snapshot, image_table, read_table, write_snapshot
from aigc_core.data.sources import load_image_source
from aigc_core.paths import Home
from data_contracts import ContractViolation, validate_snapshot

log = logging.getLogger(__name__)


@task(name="ingest", retries=2, retry_delay_seconds=5)
def ingest(dataset: str, home: str, validation_fraction: float = 0.2) -> dict:
    """Load a built-in image dataset and publish it as a snapshot (idempotent by content)."""
    progress.report("ingest", 0, 1)
    h = Home.resolve(home).ensure()
    data = load_image_source(dataset)
    table = image_table(data, validation_fraction)
    params = {**data.params, "validation_fraction": validation_fraction}
    n, c, hh, w = data.pixels.shape
    snap = write_snapshot(
        h.datasets,
        dataset,
        table,
        kind="image",
        source=data.source,
        params=params,
        extra={
            "image_shape": [c, hh, w],
            "label_set": list(range(len(data.label_names))),
            "label_names": data.label_names,
        },
    )
    progress.report("ingest", 1, 1)
    return {
        "snapshot_id": snap.id,
        "dataset": dataset,
        "path": str(snap.path),
        "rows": snap.manifest["num_rows"],
        "created": snap.created,
    }


@task(name="validate")
def validate(snapshot_id: str, home: str) -> dict:
    """Run the snapshot's data contract; a blocking failure raises and stops the flow."""
    progress.report("validate", 0, 1)
    snap = find_snapshot(Home.resolve(home).datasets, snapshot_id)
    try:
        report = validate_snapshot(read_table(snap), snap.manifest)
    except ContractViolation as e:
        create_markdown_artifact(
            e.report.markdown(),
            key="data-contract",
            description=f"data contract of {snapshot_id}: failed",
        )
        raise
    create_markdown_artifact(
        report.markdown(),
        key="data-contract",
        description=f"data contract of {snapshot_id}: passed",
    )
    progress.report("validate", 1, 1)
    return {
        "snapshot_id": snapshot_id,
        "success": report.success,
        "warnings": [c.describe() for c in report.warnings],
    }
