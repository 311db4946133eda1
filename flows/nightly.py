"""The nightly path: data -> model -> registry -> content, as one Prefect flow."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from aigc_core import names
from aigc_core.paths import Home
from flows.content import content_batch
from tasks.data import ingest, validate
from tasks.evaluation import evaluate
from tasks.registry import promote, register
from tasks.training import train


@flow(name="nightly-retrain", task_runner=ThreadPoolTaskRunner(max_workers=1))
def nightly_retrain(
    dataset: str = "digits",
    preset: str = "smoke",
    family: str = "dcgan",
    n_generate: int = 256,
    seed: int = 0,
    min_confidence: float = 0.9,
    path: str | None = None,
    init_from: str | None = None,
    home: str | None = None,
) -> dict:
    """family: dcgan or vae (images), charlstm or transformer (text, e.g. with
    dataset="python-docs"), or an installed plugin's; path: files of a user dataset (else the
    built-in `dataset`); init_from: warm start, e.g. models:/aigc-dcgan-digits@champion for
    nightly fine-tuning. The run ends with a batch of the family's kind: images, or new text
    documents (default sampling options); min_confidence applies to images."""
    dataset = names.dataset(dataset)  # a bad name fails the run before anything starts
    home = str(Home.resolve(home).root)

    # 1-2. data: snapshot, then the contract gate (raises on a blocking failure)
    snapshot = ingest(dataset, home, path=path)
    snapshot = validate(snapshot, home)

    # 3-4. model: train, then score against held-out data
    trained = train(snapshot, preset, home, family=family, init_from=init_from)
    scores = evaluate(trained, home)

    # 5-6. registry: new version as challenger; champion only if it wins
    registered = register(trained, scores, home)
    decision = promote(registered, scores, family, home)

    # 7-8. content: a batch from the champion (images or texts), shard by shard, scored and
    #      filtered
    batch = content_batch(
        f"{trained.model_name}@champion",
        n_generate,
        None,
        seed,
        home,
        policy={"image": {"min_confidence": min_confidence}},
    )

    metrics = dict(scores.metrics)
    return {
        "snapshot_id": snapshot.id,
        "snapshot_created": snapshot.created,
        "run_id": trained.run_id,
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
        "device": trained.device,
    }
