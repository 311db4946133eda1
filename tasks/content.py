"""Tasks of the content stages: a curated batch from a registered model, shard by shard.

A batch is planned once (model version resolved, shard seeds fixed, policy frozen), then each
shard generates and scores its items and writes one Parquet part atomically under
`content/.work/<batch-id>/`; a rerun skips the shards whose part is there and readable. The final
step reads every part, applies the batch-wide decisions (near-duplicates across shards), and
publishes `content/<batch-id>/` in one rename: Parquet parts, manifest, contact sheet and an
HTML review report. The batch id is derived from everything that determines the content (model
version, n, shards, seed, policy), so a rerun finds the published batch instead of a second one.

`generate` and `curate` are the two stages the nightly flow calls; `plan_batch`,
`generate_shard` and `finalize_batch` are the same work split for mapping over shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from aigc_core import progress
from aigc_core.atomic import sha256_file, staged_dir, write_bytes_atomic
from aigc_core.curation.images import decide_images, rejected_by_reason, score_images
from aigc_core.curation.policy import Policy, load_policy
from aigc_core.data.snapshot import find_snapshot, image_arrays, read_table
from aigc_core.generation.shards import part_name, plan_shards
from aigc_core.images import contact_sheet, decode_png, png_bytes, to_uint8
from aigc_core.paths import Home
from aigc_core.report import ReportItem, write_report
from tasks import mlflow_adapter as tracking
from tasks.evaluation import load_or_train_evaluator

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
REPORT = "report.html"
CONTACT_SHEET = "contact_sheet.png"
DEFAULT_SHARD_SIZE = 4096  # items per shard when the caller does not choose
IMAGE_FAMILIES = frozenset({"dcgan", "vae"})  # served by aigc_core/serving/image_generator.py

# What a shard writes: the items and every per-item score.
SHARD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),  # position in the batch
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),  # the shard's seed
        pa.field("png", pa.binary(), nullable=False),
        pa.field("predicted_label", pa.int16()),
        pa.field("confidence", pa.float32()),
        pa.field("phash", pa.int64()),
        pa.field("train_distance", pa.float32()),
        pa.field("nearest_train_id", pa.string()),
    ]
)
# What the published batch holds: the shard columns, the decision and the lineage.
BATCH_SCHEMA = pa.schema(
    [
        *SHARD_SCHEMA,
        pa.field("duplicate_of", pa.int32(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("snapshot_id", pa.string(), nullable=False),
    ]
)


# ---------------------------------------------------------------------------------------------
# model references and the plan


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """ "NAME", "NAME@ALIAS" or "NAME/VERSION" -> (name, alias, version); the default alias is
    champion."""
    ref = ref.strip()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = None
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
        alias = None
        if not version.isdigit():
            raise ValueError(f"model {ref!r}: a version after '/' is a number, e.g. {name}/3")
    else:
        name, alias, version = ref, tracking.CHAMPION, None
    if not name or (alias is not None and not alias):
        raise ValueError(f"model {ref!r}: expected NAME, NAME@ALIAS or NAME/VERSION")
    return name, alias, version


def resolve_model(ref: str) -> tracking.Version:
    """The registered version a reference names (MLflow must be configured)."""
    name, alias, version = parse_model_ref(ref)
    if alias is not None:
        mv = tracking.alias_version(name, alias)
        if mv is None:
            raise LookupError(
                f"registered model {name!r} has no {alias!r} alias: run the nightly pipeline "
                f"first so a version can be promoted, or name a version as {name}/VERSION"
            )
        return mv
    mv = tracking.get_version(name, version)
    if mv is None:
        raise LookupError(
            f"registered model {name!r} has no version {version}: list its versions "
            f"with `aigc models`"
        )
    return mv


def _batch_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def make_plan(
    model_ref: str,
    n: int,
    shards: int | None,
    seed: int,
    home: str,
    policy: Policy | None = None,
    prompt_file: str | None = None,
) -> dict:
    """Resolve the model, fix shard seeds and the policy; JSON-able, so it travels to workers."""
    h = Home.resolve(home).ensure()
    tracking.configure(h)
    mv = resolve_model(model_ref)
    family = mv.tags.get("family", "dcgan")
    if family not in IMAGE_FAMILIES:
        raise NotImplementedError(
            f"model {mv.name} version {mv.version} is a {family!r} model; batches are built "
            f"for image families ({', '.join(sorted(IMAGE_FAMILIES))}) only so far: curate text "
            "with aigc_core.curation.text"
        )
    if prompt_file is not None:
        raise ValueError(
            f"model {mv.name} version {mv.version} generates images, and prompts "
            f"(--prompt-file {prompt_file}) apply to text models; drop --prompt-file"
        )
    snapshot_id = mv.tags.get("snapshot_id", "")
    if not snapshot_id:
        raise LookupError(
            f"model {mv.name} version {mv.version} has no snapshot_id tag, so its items cannot "
            "be checked against its training data; register it through the nightly pipeline"
        )
    policy = policy or Policy()
    k = shards if shards is not None else max(1, -(-n // DEFAULT_SHARD_SIZE))
    plan = plan_shards(n, k, seed)
    image_policy = policy.image.to_dict()
    batch_id = _batch_id(
        {
            "format": FORMAT_VERSION,
            "model": mv.name,
            "version": mv.version,
            "n": n,
            "shards": k,
            "seed": seed,
            "policy": image_policy,
        }
    )
    # the evaluator is trained once here, not raced for by shards on several workers
    load_or_train_evaluator(h, snapshot_id)
    return {
        "batch_id": batch_id,
        "kind": "image",
        "model_ref": model_ref,
        "model_name": mv.name,
        "model_version": mv.version,
        "family": family,
        "model_uri": f"models:/{mv.name}/{mv.version}",
        "run_id": mv.run_id,
        "snapshot_id": snapshot_id,
        "seed": seed,
        "n": n,
        "shards": [s.to_dict() for s in plan],
        "policy": {"image": image_policy},
        "work_dir": str(h.content / ".work" / batch_id),
        "batch_dir": str(h.content / batch_id),
    }


# ---------------------------------------------------------------------------------------------
# shards

_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()
_done: dict[str, int] = {}


def _cached(key: tuple, load):
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load()
        return _cache[key]


def _training_images(h: Home, snapshot_id: str) -> tuple[np.ndarray, list[str]]:
    table = read_table(find_snapshot(h.datasets, snapshot_id))
    train = table.filter(pc.equal(table.column("split"), "train"))
    pixels, _ = image_arrays(train)
    return pixels, train.column("id").to_pylist()


def _write_part(path: Path, table: pa.Table) -> None:
    """Write one Parquet part atomically (temporary name, fsync, rename)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(path, buf.getvalue())


def _part_ok(path: Path, rows: int) -> bool:
    try:
        return pq.read_metadata(path).num_rows == rows
    except (OSError, pa.ArrowException):
        return False


def run_shard(plan: dict, shard: int, home: str) -> dict:
    """Generate and score one shard; skipped when its part is already written (or the batch is
    already published). Returns a small JSON-able record."""
    s = plan["shards"][shard]
    part = Path(plan["work_dir"]) / part_name(shard)
    record = {"shard": shard, "path": str(part), "rows": s["count"]}
    if Path(plan["batch_dir"]).exists() or _part_ok(part, s["count"]):
        log.info("shard %d of batch %s already written; skipped", shard, plan["batch_id"])
        return {**record, "skipped": True}
    h = Home.resolve(home)
    tracking.configure(h)
    model = _cached(
        ("model", tracking.client().tracking_uri, plan["model_uri"]),
        lambda: tracking.load_python_model(plan["model_uri"]),
    )
    evaluator = _cached(
        ("evaluator", str(h.root), plan["snapshot_id"]),
        lambda: load_or_train_evaluator(h, plan["snapshot_id"])[0],
    )
    train, train_ids = _cached(
        ("train", str(h.root), plan["snapshot_id"]),
        lambda: _training_images(h, plan["snapshot_id"]),
    )
    images = to_uint8(model.generate(s["count"], s["seed"]))  # (count, H, W) uint8
    _, probs = evaluator.embed(torch.from_numpy(images.astype(np.float32)[:, None] / 255.0))
    scores = score_images(images, probs, train)
    idx = np.arange(s["start"], s["start"] + s["count"])
    table = pa.table(
        {
            "id": [f"{plan['batch_id']}-{i:07d}" for i in idx],
            "index": pa.array(idx, pa.int32()),
            "shard": pa.array(np.full(len(idx), shard), pa.int32()),
            "seed": pa.array(np.full(len(idx), s["seed"]), pa.int64()),
            "png": [png_bytes(img) for img in images],
            "predicted_label": pa.array(scores["predicted_label"], pa.int16()),
            "confidence": pa.array(scores["confidence"], pa.float32()),
            "phash": pa.array(scores["phash"], pa.int64()),
            "train_distance": pa.array(scores["train_distance"], pa.float32()),
            "nearest_train_id": [train_ids[i] for i in scores["nearest_train"]],
        },
        schema=SHARD_SCHEMA,
    )
    _write_part(part, table)
    with _cache_lock:
        _done[plan["batch_id"]] = _done.get(plan["batch_id"], 0) + s["count"]
        done = _done[plan["batch_id"]]
    progress.report("generate", done, plan["n"])
    return {**record, "skipped": False}


# ---------------------------------------------------------------------------------------------
# the published batch


def _read_parts(plan: dict) -> pa.Table:
    tables = []
    for s in plan["shards"]:
        path = Path(plan["work_dir"]) / part_name(s["index"])
        if not _part_ok(path, s["count"]):
            raise RuntimeError(
                f"shard {s['index']} of batch {plan['batch_id']} is missing or unreadable at "
                f"{path}: run the batch again to regenerate it"
            )
        tables.append(pq.read_table(path, schema=SHARD_SCHEMA))
    table = pa.concat_tables(tables)
    index = table.column("index").to_numpy()
    if not np.array_equal(index, np.arange(plan["n"])):
        raise RuntimeError(
            f"batch {plan['batch_id']}: shard parts do not cover items 0..{plan['n'] - 1} "
            f"exactly once; delete {plan['work_dir']} and run the batch again"
        )
    return table


def _sheet_png(images: list[np.ndarray], captions: list[str], kept: bool) -> bytes | None:
    if not images:
        return None
    sheet = contact_sheet(
        np.stack(images), captions=captions, marks=[kept] * len(images), cols=16, scale=2
    )
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def publish_batch(plan: dict, home: str, flow_run_id: str = "") -> dict:
    """Decide, publish `content/<batch-id>/` atomically, log to MLflow; returns the manifest."""
    h = Home.resolve(home)
    final = Path(plan["batch_dir"])
    if (final / MANIFEST).exists():
        return json.loads((final / MANIFEST).read_text())
    tracking.configure(h)
    progress.report("curate", 0, plan["n"])
    table = _read_parts(plan)
    scores = table.select(["confidence", "phash", "train_distance"]).to_pandas()
    policy = Policy.from_dict(plan["policy"])
    decided = decide_images(scores, policy.image)
    reasons = rejected_by_reason(decided["reason"])
    n_kept = int(decided["kept"].sum())
    bid, n = plan["batch_id"], plan["n"]
    lineage = {
        "batch_id": bid,
        "model_name": plan["model_name"],
        "model_version": plan["model_version"],
        "run_id": plan["run_id"],
        "snapshot_id": plan["snapshot_id"],
    }
    full = table
    full = full.append_column(
        BATCH_SCHEMA.field("duplicate_of"), pa.array(decided["duplicate_of"], pa.int32())
    )
    full = full.append_column(BATCH_SCHEMA.field("kept"), pa.array(decided["kept"], pa.bool_()))
    full = full.append_column(
        BATCH_SCHEMA.field("reason"), pa.array(decided["reason"], pa.string())
    )
    for k, v in lineage.items():
        full = full.append_column(BATCH_SCHEMA.field(k), pa.array([v] * n, pa.string()))

    batch_run = tracking.start_run(
        f"batch-{bid}",
        {"aigc.stage": "content-batch", "batch_id": bid, "flow_run_id": flow_run_id, **lineage},
    )
    with tracking.run_guard(batch_run, finish=True):
        report_items, sheet_imgs = [], {True: ([], []), False: ([], [])}
        cols = full.select(["id", "png", "predicted_label", "confidence", "train_distance"])
        for i, row in enumerate(cols.to_pylist()):
            kept = bool(decided["kept"].iat[i])
            reason = decided["reason"].iat[i]
            imgs, caps = sheet_imgs[kept]
            if len(imgs) < 256:
                imgs.append(decode_png(row["png"]))
                caps.append(f"{row['predicted_label']} {row['confidence']:.2f}")
            report_items.append(
                ReportItem(
                    id=row["id"],
                    kept=kept,
                    reasons=reason.split(";") if reason else [],
                    scores={
                        "label": row["predicted_label"],
                        "conf": row["confidence"],
                        "train_d": row["train_distance"],
                    },
                    png=row["png"],
                )
            )
        sheets = {
            name: _sheet_png(*sheet_imgs[kept], kept=kept)
            for name, kept in (("kept", True), ("rejected", False))
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            **lineage,
            "kind": plan["kind"],
            "model_ref": plan["model_ref"],
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seed": plan["seed"],
            "shards": plan["shards"],
            "policy": plan["policy"],
            "n_generated": n,
            "n_kept": n_kept,
            "n_rejected": n - n_kept,
            "rejected_by_reason": reasons,
            "batch_run_id": batch_run,
            "flow_run_id": flow_run_id,
            "files": [],
            "contact_sheet": CONTACT_SHEET,
            "report": REPORT,
        }
        try:
            with staged_dir(final) as tmp:
                for s in plan["shards"]:
                    path = tmp / part_name(s["index"])
                    part = full.slice(s["start"], s["count"])
                    pq.write_table(part, path, compression="zstd")
                    manifest["files"].append(
                        {
                            "path": path.name,
                            "rows": s["count"],
                            "kept": int(pc.sum(part.column("kept")).as_py() or 0),
                            "sha256": sha256_file(path),
                        }
                    )
                first = sheets["kept"] or sheets["rejected"]
                (tmp / CONTACT_SHEET).write_bytes(first)
                summary = {
                    k: manifest[k]
                    for k in (
                        "batch_id",
                        "model_name",
                        "model_version",
                        "run_id",
                        "snapshot_id",
                        "seed",
                        "n_generated",
                        "n_kept",
                        "rejected_by_reason",
                        "policy",
                        "created_at",
                    )
                }
                write_report(
                    tmp / REPORT,
                    f"Content batch {bid}",
                    summary,
                    report_items,
                    sheets=sheets,
                )
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        except FileExistsError:  # published concurrently by another run of the same batch
            return json.loads((final / MANIFEST).read_text())
        tracking.log_params(
            batch_run,
            {
                "n": n,
                "seed": plan["seed"],
                "shards": len(plan["shards"]),
                "model_uri": plan["model_uri"],
                **{f"policy.{k}": v for k, v in plan["policy"]["image"].items()},
            },
        )
        tracking.log_metrics(
            batch_run,
            {
                "n_generated": n,
                "n_kept": n_kept,
                "kept_fraction": n_kept / n,
                **{f"rejected.{_metric_key(k)}": v for k, v in reasons.items()},
            },
        )
        for name in (MANIFEST, REPORT, CONTACT_SHEET):
            tracking.log_artifact(batch_run, final / name, "content")
    shutil.rmtree(plan["work_dir"], ignore_errors=True)
    progress.report("curate", n, n)
    log.info("batch %s published: %d of %d kept", bid, n_kept, n)
    return manifest


def _metric_key(reason: str) -> str:
    """An MLflow metric name for a reason: `low_confidence<0.9` -> `low_confidence_lt_0.9`."""
    return reason.replace("<", "_lt_").replace(">", "_gt_")


def publish_artifacts(manifest: dict) -> None:
    """Prefect table and markdown artifacts for a published batch."""
    bid = manifest["batch_id"]
    rows = [{"reason": "kept", "items": manifest["n_kept"]}] + [
        {"reason": k, "items": v} for k, v in sorted(manifest["rejected_by_reason"].items())
    ]
    create_table_artifact(
        rows, key="content-batch-reasons", description=f"batch {bid}: items per reason"
    )
    folder = Path(manifest.get("batch_dir", ""))
    create_markdown_artifact(
        f"# Content batch `{bid}`\n\n"
        f"model `{manifest['model_name']}` v{manifest['model_version']} (run "
        f"`{manifest['run_id']}`), snapshot `{manifest['snapshot_id']}`\n\n"
        f"**{manifest['n_kept']} of {manifest['n_generated']} kept**; rejected: "
        f"{manifest['rejected_by_reason'] or 'none'}\n\n"
        f"policy: `{json.dumps(manifest['policy'], sort_keys=True)}`\n\n"
        f"review report: `{folder / REPORT}`",
        key="content-batch",
        description=f"content batch {bid}",
    )


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


# ---------------------------------------------------------------------------------------------
# Prefect tasks


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
) -> dict:
    """Resolve the model version, fix shard seeds and the policy, prepare the evaluator.
    `policy` (a dict in the policy file's format) is used instead of `policy_file` when given."""
    chosen = Policy.from_dict(policy) if policy is not None else load_policy(policy_file)
    return make_plan(model_ref, n, shards, seed, home, chosen, prompt_file)


@task(name="generate-shard", retries=1, retry_delay_seconds=2)
def generate_shard(plan: dict, shard: int, home: str) -> dict:
    """One shard: generate, score, write its Parquet part atomically (skipped when written)."""
    return run_shard(plan, shard, home)


@task(name="finalize-batch")
def finalize_batch(plan: dict, shard_records: list[dict], home: str) -> dict:
    """Batch-wide decisions, atomic publication, MLflow run, Prefect artifacts."""
    manifest = publish_batch(plan, home, flow_run_id=_flow_run_id())
    manifest = {**manifest, "batch_dir": plan["batch_dir"]}
    publish_artifacts(manifest)
    return {**manifest, "shards_skipped": sum(bool(r.get("skipped")) for r in shard_records)}
