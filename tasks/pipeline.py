"""The pipeline run: one MLflow parent run per flow run, and the links a flow run shows.

A night is one MLflow run (`aigc.stage=pipeline`, named like its Prefect flow run) with the data
contract, training and content-batch runs nested under it; it ends FINISHED with the night's
summary (metrics, the version, whether anything was trained) or FAILED. Link artifacts on the
Prefect flow run point at the MLflow runs, the registered version and the review report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import flow_run

from aigc_core import provenance, stages
from aigc_core.paths import Home
from tasks.tracking import Tracker

log = logging.getLogger(__name__)


@task(name="open-pipeline-run")
def open_pipeline_run(home: str, name: str, lineage: Mapping[str, object]) -> str:
    """The parent MLflow run of this flow run, tagged with `lineage` (family, dataset, ...)."""
    tags = stages.tags(
        stage="pipeline",
        flow_run_id=flow_run.get_id() or "",
        git_revision=provenance.git_revision(),
        code_digest=provenance.code_digest(),
        **lineage,
    )
    return Tracker(Home.resolve(home)).start_run(name, tags)


@task(name="close-pipeline-run")
def close_pipeline_run(home: str, run_id: str, summary: Mapping[str, object] | None) -> None:
    """End the parent run: FINISHED with the summary's numbers, tags and JSON; FAILED without
    a summary (the flow raised)."""
    tracker = Tracker(Home.resolve(home))
    if summary is None:
        tracker.end_run(run_id, "FAILED")
        return
    numbers = {
        k: float(v)
        for k, v in summary.get("metrics", {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    numbers |= {k: float(summary[k]) for k in ("n_generated", "n_kept") if k in summary}
    tracker.log_metrics(run_id, numbers)
    tracker.set_run_tags(
        run_id,
        stages.tags(
            trained=str(summary.get("trained")).lower(),
            model_version=summary.get("model_version"),
            promoted=str(summary.get("promoted")).lower(),
            batch_id=summary.get("batch_id"),
        ),
    )
    tracker.set_run_tags(run_id, {"mlflow.note.content": _description(summary)})
    tracker.log_dict(run_id, json.loads(json.dumps(summary, default=str)), "summary.json")
    tracker.end_run(run_id, "FINISHED")


def _description(summary: Mapping[str, object]) -> str:
    """The pipeline run's description in MLflow's UI: what the night did, in two lines."""
    name, version = summary.get("model_name"), summary.get("model_version")
    model = (
        f"trained {name} version {version}"
        if summary.get("trained")
        else f"trained nothing: {name} version {version} has this snapshot, settings and code"
    )
    s = summary
    return (
        f"Snapshot `{s.get('snapshot_id')}`; {model}; gate: {s.get('promotion_reason')} "
        f"(champion: version {s.get('champion_version')}).\n\nContent batch "
        f"`{s.get('batch_id')}`: {s.get('n_kept')} of {s.get('n_generated')} kept."
    )


@task(name="link-artifacts")
def link_artifacts(home: str, links: Mapping[str, object]) -> None:
    """Prefect link artifacts to what the run made: MLflow runs and the registered version (on
    a tracking server: their UI pages; with the local store, a note saying how to open them),
    and the content batch's review report. `links`: pipeline_run_id, run_id, model_name,
    model_version, report (a path), batch_run_id."""
    tracker = Tracker(Home.resolve(home))
    pages = {
        "mlflow-pipeline-run": (
            "MLflow pipeline run",
            _run_page(tracker, links, "pipeline_run_id"),
        ),
        "mlflow-training-run": ("MLflow training run", _run_page(tracker, links, "run_id")),
        "mlflow-batch-run": ("MLflow content-batch run", _run_page(tracker, links, "batch_run_id")),
        "registered-version": (
            f"{links.get('model_name')} version {links.get('model_version')}",
            tracker.version_page(str(links["model_name"]), str(links["model_version"]))
            if links.get("model_name") and links.get("model_version")
            else None,
        ),
    }
    for key, (text, url) in pages.items():
        if url:
            create_link_artifact(url, link_text=text, key=key, description=text)
    if tracker.ui_url() is None:
        ids = "\n".join(f"- {k}: `{v}`" for k, v in links.items() if v and k != "report")
        create_markdown_artifact(
            f"MLflow (local store {tracker.uri}):\n\n{ids}\n\nOpen it with "
            f"`mlflow ui --backend-store-uri {tracker.uri}`, or run `aigc up` for a server "
            "that these links then point at.",
            key="mlflow-runs",
            description="where this run's MLflow records are",
        )
    report = links.get("report")
    if report and Path(str(report)).exists():
        create_link_artifact(
            Path(str(report)).resolve().as_uri(),
            link_text="review report",
            key="review-report",
            description="the content batch's review report (report.html)",
        )


def _run_page(tracker: Tracker, links: Mapping[str, object], key: str) -> str | None:
    run_id = links.get(key)
    return tracker.run_page(str(run_id)) if run_id else None
