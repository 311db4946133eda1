"""The nightly path: data -> model -> registry -> content, as one Prefect flow.

A night is named after what it trains (`nightly-dcgan-digits-2026-12-01`), tagged with its
family, dataset and preset, and is one MLflow parent run with the stages' runs nested under it.
A night whose snapshot, resolved config and code match a registered version trains nothing and
reports that version (`"trained": false`); `force` retrains. With `compress`, the night ends by
compressing the champion (`flows.compress`: `champion-compressed` moves only within the family's
tolerance). A failed or crashed night sends a notice through the configured notification block
(`flows.notify`).
"""

from __future__ import annotations

import logging

from prefect import flow
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from aigc_core import families, names, settings
from aigc_core.paths import Home
from flows import notify
from flows.compress import compress_model
from flows.content import content_batch
from flows.runs import add_tags, name_from
from tasks.compression import check_family
from tasks.data import ingest, validate
from tasks.evaluation import evaluate
from tasks.pipeline import close_pipeline_run, link_artifacts, open_pipeline_run
from tasks.registry import find_unchanged, promote, register
from tasks.training import train

log = logging.getLogger(__name__)


@flow(
    name="nightly-retrain",
    flow_run_name=name_from("nightly-{family}-{dataset}-{date}", family="dcgan", dataset="digits"),
    task_runner=ThreadPoolTaskRunner(max_workers=1),
    **notify.HOOKS,
)
def nightly_retrain(
    dataset: str = "digits",
    preset: str = "smoke",
    family: str = "dcgan",
    n_generate: int = 256,
    seed: int = 0,
    min_confidence: float | None = None,
    path: str | None = None,
    init_from: str | None = None,
    home: str | None = None,
    config: dict | None = None,
    force: bool = False,
    compress: bool = False,
) -> dict:
    """family: dcgan or vae (images), charlstm or transformer (text, e.g. with
    dataset="python-docs"), wavegan (audio, e.g. with dataset="notes"), or an installed
    plugin's; path: files of a user dataset (else the built-in `dataset`); init_from: warm
    start, e.g. models:/aigc-dcgan-digits@champion for nightly fine-tuning (a warm-started
    night always trains). config: settings overrides in the config file's format, {"model":
    {...}, "train": {...}, "curation": {...}} (see `aigc config schema`); min_confidence
    (images, audio) overrides the family's kind's curation.<kind>.min_confidence. force: train
    even when a version with this snapshot, config and code exists. The run ends with a batch
    of the family's kind: images, new text documents (default sampling options) or audio
    clips, and, with `compress` (off by default), the champion's compressed version (reused
    when the champion was compressed before)."""
    # bad names and settings fail the run before anything starts
    dataset = names.dataset(dataset)
    resolved = settings.resolve(families.get(family), preset, config)
    if compress:
        check_family(families.get(family), "compress=True")
    home = str(Home.resolve(home).root)
    add_tags(family=family, dataset=dataset, preset=preset)
    lineage = {"family": family, "dataset": dataset, "preset": preset}
    pipeline = open_pipeline_run(home, flow_run.name or "nightly", lineage)
    try:
        summary = _night(
            pipeline, dataset, preset, family, n_generate, seed, min_confidence, path,
            init_from, home, config, force, resolved, compress,
        )  # fmt: skip
    except BaseException:
        try:  # mark the parent run FAILED; the night's own error is what the run reports
            close_pipeline_run(home, pipeline, None)
        except Exception as e:  # noqa: BLE001 - e.g. the tracking server is what failed
            log.warning("could not mark the pipeline run %s failed: %s", pipeline, e)
        raise
    close_pipeline_run(home, pipeline, summary)
    return summary


def _night(
    pipeline, dataset, preset, family, n_generate, seed, min_confidence, path, init_from, home,
    config, force, resolved, compress,
) -> dict:  # fmt: skip
    # 1-2. data: snapshot, then the contract gate (raises on a blocking failure)
    snapshot = ingest(dataset, home, path=path)
    snapshot = validate(snapshot, home, parent_run_id=pipeline)
    model_name = names.registered_model_name(family, snapshot.name)

    # 3-6. model and registry, unless this very model exists: train, score against held-out
    #      data, register as challenger, champion only if it wins
    done = None
    if not (force or init_from):
        done = find_unchanged(model_name, snapshot.id, family, resolved.digest(), home)
    if done is None:
        trained = train(
            snapshot, preset, home, family=family, init_from=init_from, config=config,
            parent_run_id=pipeline,
        )  # fmt: skip
        scores = evaluate(trained, home)
        registered = register(trained, scores, home)
        decision = promote(registered, scores, family, home)
        device = trained.device
    else:
        registered, scores, decision = done
        device = None

    # 7-8. content: a batch from the champion (images, texts or clips), shard by shard, scored
    #      and filtered by the curation policy (the config's, with min_confidence on top for a
    #      kind whose curation has an evaluator confidence: images, audio)
    policy = resolved.policy.to_dict()
    section = policy.get(families.get(family).kind, {})
    if min_confidence is not None and "min_confidence" in section:
        section["min_confidence"] = min_confidence
    batch = content_batch(
        f"{model_name}@champion", n_generate, None, seed, home, policy=policy,
        parent_run_id=pipeline,
    )  # fmt: skip

    # 9. compression, when asked and there is a champion: its compressed version, gated onto
    #    `champion-compressed` by the family's tolerance
    compressed = None
    if compress and decision.champion_version is not None:
        compressed = compress_model(f"{model_name}@champion", home, parent_run_id=pipeline)

    metrics = dict(scores.metrics)
    link_artifacts(
        home,
        {
            "pipeline_run_id": pipeline,
            "run_id": registered.run_id,
            "model_name": registered.model_name,
            "model_version": registered.version,
            "batch_run_id": batch.batch_run_id,
            "report": f"{batch.batch_dir}/report.html",
        },
    )
    return {
        "snapshot_id": snapshot.id,
        "snapshot_created": snapshot.created,
        "trained": done is None,
        "run_id": registered.run_id,
        "pipeline_run_id": pipeline,
        "model_name": registered.model_name,
        "model_version": registered.version,
        "promoted": decision.promoted,
        "promotion_reason": decision.reason,
        "champion_version": decision.champion_version,
        "fid": metrics.get("fid"),
        "fid_floor": metrics.get("fid_floor"),
        "evaluator_accuracy": metrics.get("evaluator_accuracy"),
        "bits_per_char": metrics.get("bits_per_char"),
        "metrics": metrics,
        "batch_id": batch.batch_id,
        "batch_dir": batch.batch_dir,
        "batch_kind": batch.kind,
        "batch_model_version": batch.model_version,
        "n_generated": batch.n_generated,
        "n_kept": batch.n_kept,
        "device": device,
        "compression": compressed,
    }
