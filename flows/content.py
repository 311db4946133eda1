"""The content batch as one subflow: plan -> shards -> publish, for every path that makes one.

The nightly flow ends with it and batch-generate is it with a choice of task runner: shards run
on the subflow's runner, in-process one after another (torch already uses every core) or on
Dask (`content_batch.with_options(task_runner=...)`). The plan fixes every shard's seed first,
so where shards run never changes the batch.
"""

from __future__ import annotations

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from aigc_core.content import Batch
from flows.runs import name_from
from tasks.content import finalize_batch, generate_shard, plan_batch


@flow(
    name="content-batch",
    flow_run_name=name_from("content-{model_ref}-{n}"),
    task_runner=ThreadPoolTaskRunner(max_workers=1),
)
def content_batch(
    model_ref: str,
    n: int,
    shards: int | None,
    seed: int,
    home: str,
    policy: dict | None = None,
    policy_file: str | None = None,
    prompt_file: str | None = None,
    sampling: dict | None = None,
    parent_run_id: str | None = None,
    labels: str | None = None,
    labels_file: str | None = None,
    options: dict | None = None,
    interpolate: list[str] | None = None,
) -> Batch:
    """A curated batch of `n` items from the registered model `model_ref` (NAME, NAME@ALIAS or
    NAME/VERSION). `policy` (the policy file's format) overrides `policy_file`; `prompt_file`
    and `sampling` (TextSampling fields) are for text models; `labels` (a spec such as "7",
    "3,7" or "3:0.7,7:0.3") or `labels_file` name the classes asked of a conditional image or
    audio model, `options` an image family's generation options. An audio model's batch holds
    WAV files, and its report a player and a spectrogram per clip. The batch's MLflow run
    nests under `parent_run_id` (the pipeline run) when given."""
    # 1. plan: the model version, per-shard seeds, the policy; the evaluator (images, audio)
    #    made ready once and the classes and options asked checked against the model, or the
    #    prompts and sampling options (text) checked against the model
    plan = plan_batch(
        model_ref, n, shards, seed, home, policy_file, prompt_file, policy=policy,
        sampling=sampling, labels=labels, labels_file=labels_file, options=options,
        interpolate=interpolate,
    )  # fmt: skip

    # 2. shards: generate, score and write one Parquet part each (finished shards are skipped);
    #    .result() raises a failed shard's error instead of the flow returning nothing
    futures = generate_shard.map(unmapped(plan), range(len(plan.shards)), unmapped(home))
    records = futures.result()

    # 3. the batch: decisions across shards, atomic publication, MLflow run, artifacts
    return finalize_batch(plan, records, home, parent_run_id)
