"""The ingest path on its own: a dataset into a validated snapshot."""

from __future__ import annotations

from prefect import flow

from aigc_core import names
from aigc_core.paths import Home
from flows import notify
from flows.runs import add_tags, name_from
from tasks.data import ingest, validate


@flow(
    name="ingest",
    flow_run_name=name_from("ingest-{dataset}-{date}", dataset="digits"),
    **notify.HOOKS,
)
def ingest_dataset(dataset: str = "digits", home: str | None = None) -> dict:
    dataset = names.dataset(dataset)  # a bad name fails the run before anything starts
    add_tags(dataset=dataset)
    home = str(Home.resolve(home).root)
    snapshot = validate(ingest(dataset, home), home)
    return {
        "snapshot_id": snapshot.id,
        "dataset": snapshot.name,
        "kind": snapshot.kind,
        "path": snapshot.path,
        "rows": snapshot.rows,
        "created": snapshot.created,
    }
