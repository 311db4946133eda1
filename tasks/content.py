"""Tasks of a content batch: plan it, make its shards, publish it (logic in aigc_core.content).

`plan_batch` resolves the model reference in the registry and keeps the version's files in the
home's model cache; `generate_shard` is mapped over the shards (retried once: a shard's body is
idempotent); `finalize_batch` publishes the batch, records it as an MLflow run and adds Prefect
artifacts. Flows wire them through the `flows.content.content_batch` subflow.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from aigc_core import content
from aigc_core.content import Batch, BatchPlan, ShardResult
from aigc_core.content.publish import snapshot_class_names
from aigc_core.curation.policy import Policy, load_policy
from aigc_core.generation.labels import load_labels_file
from aigc_core.paths import Home
from tasks.tracking import Tracker


@task(name="plan-batch")
def plan_batch(
    model_ref: str,
    n: int,
    shards: int | None,
    seed: int,
    home: str,
    policy_file: str | None = None,
    prompt_file: str | None = None,
    policy: dict | None = None,
    sampling: dict | None = None,
    labels: str | None = None,
    labels_file: str | None = None,
    options: dict | None = None,
    interpolate: list[str] | None = None,
) -> BatchPlan:
    """Resolve the model version, fix shard seeds and the policy; prepare the evaluator
    (images, audio: the snapshot's audio evaluator, against whose clip length and rate the
    model's are checked) or read the prompts and check them and the sampling options (text).
    `policy` (a dict in the policy file's format) is used instead of `policy_file` when given;
    `sampling`: max_new_tokens, temperature, top_k, top_p, stop (text models only);
    `labels` (a spec: "7", "3,7", "3:0.7,7:0.3") or `labels_file` (one spec a line): the
    classes asked of a conditional image or audio model; `options`: its family's generation
    options (e.g. guidance, sampling_steps)."""
    if labels and labels_file:
        raise ValueError("give either labels or a labels file, not both")
    chosen = Policy.from_dict(policy) if policy is not None else load_policy(policy_file)
    spec = load_labels_file(labels_file) if labels_file else labels
    h = Home.resolve(home).ensure()
    tracker = Tracker(h)
    version = tracker.resolve(model_ref)
    return content.make_plan(
        version,
        h,
        n,
        shards,
        seed,
        model_ref=model_ref,
        fetch_model=lambda: content.model_files(h, version, tracker.download_model),
        policy=chosen,
        prompt_file=prompt_file,
        sampling=sampling,
        labels=spec,
        options=options,
        interpolate=interpolate,
    )


@task(name="generate-shard", retries=1, retry_delay_seconds=2)
def generate_shard(plan: BatchPlan, shard: int, home: str) -> ShardResult:
    """One shard: generate, score, write its Parquet part atomically (skipped when written)."""
    return content.run_shard(plan, shard, Home.resolve(home))


@task(name="finalize-batch")
def finalize_batch(
    plan: BatchPlan, shards: list[ShardResult], home: str, parent_run_id: str | None = None
) -> Batch:
    """Batch-wide decisions, atomic publication, MLflow run (nested under `parent_run_id`
    when given), Prefect artifacts."""
    skipped = sum(r.skipped for r in shards)
    batch = content.published(plan, skipped)
    if batch is None:
        curated = content.curate(plan)
        tracker = Tracker(Home.resolve(home))
        flow_run_id = _flow_run_id()
        tags = content.run_tags(plan, flow_run_id)
        run_id = tracker.start_run(content.run_name(plan), tags, parent_run_id)
        with tracker.run(run_id, finish=True):
            batch = content.publish(
                plan,
                curated,
                batch_run_id=run_id,
                flow_run_id=flow_run_id,
                shards_skipped=skipped,
                mlflow_url=tracker.ui_url() or "",  # none for the local store
                mlflow_experiment_id=tracker.experiment_id,
                class_names=snapshot_class_names(tracker.home, plan.snapshot_id),
            )
            if batch.batch_run_id == run_id:  # not published first by another run
                tracker.log_params(run_id, content.run_params(plan))
                tracker.log_metrics(run_id, content.run_metrics(batch))
                for path in batch.artifacts():
                    tracker.log_artifact(run_id, path, "content")
    create_table_artifact(
        content.reason_rows(batch),
        key="content-batch-reasons",
        description=f"batch {batch.batch_id}: items per reason",
    )
    create_markdown_artifact(
        content.summary_markdown(batch),
        key="content-batch",
        description=f"content batch {batch.batch_id}",
    )
    return batch


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")
