"""Tasks of the generate and curate stages: a content batch from the serving model.

A batch id is derived from everything that determines its content (model version, n, seed,
curation policy), so a rerun finds the published batch instead of writing a second one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from prefect import task
from prefect.artifacts import create_markdown_artifact

from aigc_core import progress
from aigc_core.atomic import sha256_file, staged_dir, write_bytes_atomic
from aigc_core.curation.images import ImagePolicy, curate_images
from aigc_core.images import contact_sheet, png_bytes, to_uint8
from aigc_core.paths import Home
from tasks import mlflow_adapter as tracking
from tasks.evaluation import load_or_train_evaluator

log = logging.getLogger(__name__)

BATCH_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),
        pa.field("png", pa.binary(), nullable=False),
        pa.field("predicted_label", pa.int16()),
        pa.field("confidence", pa.float32()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("snapshot_id", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
    ]
)


def _batch_id(name: str, version: str, n: int, seed: int, policy: ImagePolicy) -> str:
    key = json.dumps(
        {"model": name, "version": version, "n": n, "seed": seed, "policy": policy.to_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@task(name="generate")
def generate(
    model_name: str,
    n: int,
    seed: int,
    min_confidence: float,
    home: str,
    alias: str = tracking.CHAMPION,
) -> dict:
    """Load models:/NAME@ALIAS through MLflow and generate n images in batches."""
    h = Home.resolve(home).ensure()
    tracking.configure(h)
    mv = tracking.alias_version(model_name, alias)
    if mv is None:
        raise LookupError(
            f"registered model {model_name!r} has no {alias!r} alias: "
            f"run the nightly pipeline first so a version can be promoted"
        )
    policy = ImagePolicy(min_confidence=min_confidence)
    batch_id = _batch_id(model_name, mv.version, n, seed, policy)
    work = h.content / ".work" / f"{batch_id}.npy"
    lineage = {
        "batch_id": batch_id,
        "model_name": model_name,
        "model_version": mv.version,
        "run_id": mv.run_id,
        "snapshot_id": mv.tags.get("snapshot_id", ""),
        "seed": seed,
        "n": n,
        "policy": policy.to_dict(),
        "work_file": str(work),
        "batch_dir": str(h.content / batch_id),
    }
    if (h.content / batch_id).exists() or work.exists():
        return lineage
    model = tracking.load_python_model(f"models:/{model_name}@{alias}")
    images = model.generate(
        n, seed, on_batch=lambda done, total: progress.report("generate", done, total)
    )
    write_bytes_atomic(work, _npy_bytes(to_uint8(images)))
    return lineage


def _npy_bytes(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


@task(name="curate")
def curate(generated: dict, home: str) -> dict:
    """Score, filter and publish the batch: Parquet, contact sheet and manifest, atomically."""
    h = Home.resolve(home)
    final = Path(generated["batch_dir"])
    if final.exists():
        return json.loads((final / "manifest.json").read_text())
    work = Path(generated["work_file"])
    images = np.load(work, allow_pickle=False)  # (n, H, W) uint8
    progress.report("curate", 0, len(images))
    evaluator, _ = load_or_train_evaluator(h, generated["snapshot_id"])
    x = torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)
    _, probs = evaluator.embed(x)
    policy = ImagePolicy(**generated["policy"])
    scored = curate_images(images, probs, policy)
    bid = generated["batch_id"]
    n = len(images)
    table = pa.table(
        {
            "id": [f"{bid}-{i:06d}" for i in range(n)],
            "index": pa.array(range(n), pa.int32()),
            "png": [png_bytes(img) for img in images],
            "predicted_label": pa.array(scored["predicted_label"], pa.int16()),
            "confidence": pa.array(scored["confidence"], pa.float32()),
            "kept": scored["kept"],
            "reason": scored["reason"],
            "model_name": [generated["model_name"]] * n,
            "model_version": [generated["model_version"]] * n,
            "run_id": [generated["run_id"]] * n,
            "snapshot_id": [generated["snapshot_id"]] * n,
            "seed": pa.array([generated["seed"]] * n, pa.int64()),
        },
        schema=BATCH_SCHEMA,
    )
    reasons = (
        scored.loc[~scored["kept"], "reason"].str.split(";").explode().value_counts().to_dict()
    )
    sheet_n = min(n, 256)
    sheet = contact_sheet(
        images[:sheet_n],
        captions=[
            f"{lab} {c:.2f}"
            for lab, c in zip(
                scored["predicted_label"][:sheet_n], scored["confidence"][:sheet_n], strict=True
            )
        ],
        marks=scored["kept"][:sheet_n].tolist(),
        cols=16,
        scale=2,
    )
    try:
        with staged_dir(final) as tmp:
            pq.write_table(table, tmp / "part-00000.parquet", compression="zstd")
            sheet.save(tmp / "contact_sheet.png")
            manifest = {
                "batch_id": bid,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "model_name": generated["model_name"],
                "model_version": generated["model_version"],
                "run_id": generated["run_id"],
                "snapshot_id": generated["snapshot_id"],
                "seed": generated["seed"],
                "policy": generated["policy"],
                "n_generated": n,
                "n_kept": int(scored["kept"].sum()),
                "rejected_by_reason": reasons,
                "files": [
                    {
                        "path": "part-00000.parquet",
                        "rows": n,
                        "sha256": sha256_file(tmp / "part-00000.parquet"),
                    }
                ],
                "contact_sheet": "contact_sheet.png",
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    except FileExistsError:
        manifest = json.loads((final / "manifest.json").read_text())
    work.unlink(missing_ok=True)
    progress.report("curate", n, n)
    create_markdown_artifact(
        f"# Content batch `{bid}`\n\nmodel `{manifest['model_name']}` v{manifest['model_version']}"
        f", snapshot `{manifest['snapshot_id']}`\n\n{manifest['n_kept']} of {n} kept; rejected: "
        f"{reasons or 'none'}\n\nfolder: `{final}`",
        key="content-batch",
        description=f"content batch {bid}",
    )
    return manifest
