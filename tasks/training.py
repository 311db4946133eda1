"""Task of the train stage: fit a model on a snapshot and track the run in MLflow.

Checkpoints live under the run's folder, `<home>/runs/<run_id>/checkpoints/`. While a run is
unfinished, `<home>/runs/active/<family>-<snapshot>-<preset>.json` names it, so that
`resume="auto"` finds it again after a crash or SIGTERM and continues the same MLflow run;
the pointer is removed when training completes. `resume="never"` refuses to start while such a
run exists (the user chooses: resume it, or remove the pointer file).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import torch
from prefect import task
from prefect.runtime import flow_run

from aigc_core import progress
from aigc_core.atomic import write_bytes_atomic
from aigc_core.data.snapshot import find_snapshot, image_arrays, read_table, text_split
from aigc_core.models.io import save_model
from aigc_core.paths import Home
from aigc_core.training import engine, interrupt
from aigc_core.training.device import pick_device
from tasks import mlflow_adapter as tracking

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never")
TEXT_INPUT_EXAMPLE = {"prompt": ["The "], "max_new_tokens": [16], "seed": [0]}


def model_name(family: str, dataset: str) -> str:
    """One registered model per family and dataset, e.g. aigc-dcgan-digits."""
    return f"aigc-{family}-{dataset}"


def _active_pointer(h: Home, family: str, snapshot_id: str, preset: str) -> Path:
    return h.runs / "active" / f"{family}-{snapshot_id}-{preset}.json"


def _train_data(family: str, snap, table) -> tuple[engine.TrainData, dict]:
    """The family's training data from the snapshot, and a few counts to log."""
    kind = snap.manifest.get("kind", "image")
    want = "text" if family in engine.TEXT_FAMILIES else "image"
    if kind != want:
        raise ValueError(
            f"the {family} family trains on {want} snapshots; snapshot {snap.id} "
            f"({snap.name}) holds {kind}: ingest a {want} dataset"
        )
    if want == "image":
        pixels, _ = image_arrays(table, "train")
        try:
            val, _ = image_arrays(table, "validation")
            val_t = torch.from_numpy(val)
        except Exception:  # noqa: BLE001 - an empty validation split is allowed
            val_t = None
        data = engine.TrainData(images=torch.from_numpy(pixels), val_images=val_t)
        return data, {"train_images": len(pixels)}
    train_text = "\n\n".join(text_split(table, "train"))
    try:
        val_text = "\n\n".join(text_split(table, "validation"))
    except Exception:  # noqa: BLE001 - empty validation split: hold out the end of train
        val_text = None
    return engine.TrainData(text=train_text, val_text=val_text or None), {
        "train_characters": len(train_text),
        "validation_characters": len(val_text or ""),
    }


def _init_source(init_from: str | None, work_dir: Path):
    """A local model folder for a warm start: `init_from` itself, or the weights and config of a
    logged model (models:/NAME@alias, runs:/...) downloaded into `work_dir`; and the registry
    version it came from (for lineage)."""
    if not init_from:
        return None, {}
    if Path(init_from).is_dir():
        return Path(init_from), {"parent_model_uri": init_from}
    shutil.rmtree(work_dir, ignore_errors=True)  # an alias may have moved since the last one
    folder = tracking.download_model_files(init_from, work_dir)
    lineage = {"parent_model_uri": init_from}
    if init_from.startswith("models:/"):
        name, _, alias = init_from.removeprefix("models:/").partition("@")
        v = tracking.alias_version(name, alias) if alias else None
        if v is not None:
            lineage["parent_version"] = v.version
    return folder, lineage


@task(name="train")
def train(
    snapshot_id: str,
    preset: str,
    home: str,
    family: str = "dcgan",
    device: str | None = None,
    resume: str = "auto",
    init_from: str | None = None,
    overrides: dict | None = None,
) -> dict:
    """Train `family` at `preset` on a snapshot. resume: "auto" continues an unfinished run
    of the same family, snapshot and preset from its last valid checkpoint; "never" refuses
    when one exists. init_from: a model URI or folder to warm-start from."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    engine.preset(family, preset)  # fail early on a bad family or preset
    h = Home.resolve(home).ensure()
    tracking.configure(h)
    snap = find_snapshot(h.datasets, snapshot_id)
    table = read_table(snap)
    data, counts = _train_data(family, snap, table)
    dev = pick_device(device)
    pointer = _active_pointer(h, family, snapshot_id, preset)

    run_id, fresh = None, False
    if pointer.exists():
        previous = json.loads(pointer.read_text())["run_id"]
        if resume == "never":
            raise RuntimeError(
                f"run {previous} of {family} on {snapshot_id} ({preset}) did not finish; "
                f"resume it (--resume auto) or remove {pointer} to start over"
            )
        run_id = previous
        tracking.client().update_run(run_id, status="RUNNING")
        log.info("resuming run %s", run_id)
    init, lineage = (None, {}) if run_id else _init_source(init_from, h.runs / ".warm-start")
    if run_id is None:
        run_id = tracking.start_run(
            run_name=f"{family}-{snap.name}-{preset}",
            tags={
                "snapshot_id": snapshot_id,
                "dataset": snap.name,
                "family": family,
                "preset": preset,
                "flow_run_id": flow_run.get_id() or "",
                "git_revision": tracking.git_revision(),
                **({"init_from": init_from} if init_from else {}),
            },
        )
        write_bytes_atomic(pointer, json.dumps({"run_id": run_id}).encode())
        fresh = True
    run_dir = h.runs / run_id

    with tracking.run_guard(run_id):
        if fresh:
            model_cfg, train_cfg = engine.preset(family, preset)
            train_cfg = dataclasses.replace(train_cfg, **(overrides or {}))
            tracking.log_params(
                run_id,
                {
                    **{f"model.{k}": v for k, v in model_cfg.to_dict().items() if k != "vocab"},
                    **{f"train.{k}": v for k, v in train_cfg.to_dict().items()},
                    "preset": preset,
                    "device": str(dev),
                    "snapshot_id": snapshot_id,
                    **counts,
                },
            )
            columns = [c for c in ("id", "split", "label") if c in table.column_names]
            tracking.log_dataset(
                run_id,
                table.select(columns).to_pandas(),
                name=f"{snap.name}@{snapshot_id}",
                source=str(snap.path),
                digest=snapshot_id,
            )
        with interrupt.stop_on_signals():
            result = engine.train_model(
                family,
                preset,
                data,
                dev,
                run_dir / "checkpoints",
                resume=True,  # a fresh run's folder is empty; a resumed one continues
                init_from=init,
                overrides=overrides,
                on_log=lambda step, m: tracking.log_metrics(run_id, m, step=step),
                on_step=lambda s, total: progress.report("train", s, total),
                stop=interrupt.stop_requested,
            )
        model_dir = run_dir / "model"
        module, config = result.serving_module()
        save_model(model_dir, module, config)
    pointer.unlink(missing_ok=True)

    last = result.history[-1] if result.history else {}
    out = {
        "run_id": run_id,
        "snapshot_id": snapshot_id,
        "family": family,
        "model_name": model_name(family, snap.name),
        "model_dir": str(model_dir),
        "checkpoint_dir": str(run_dir / "checkpoints"),
        "preset": preset,
        "device": str(dev),
        "steps": result.train_cfg.total_steps,
        "resumed_from_step": result.start_step,
        "samples_per_s": last.get("samples_per_s"),
        **lineage,
    }
    if family == "dcgan":
        out |= {"final_loss_g": last.get("loss_g"), "final_loss_d": last.get("loss_d")}
    elif family == "vae":
        out |= {"final_loss": last.get("loss"), "final_val_neg_elbo": last.get("val_neg_elbo")}
    else:
        out |= {
            "final_loss": last.get("loss"),
            "final_val_loss": last.get("val_loss"),
            "final_val_bpc": last.get("val_bpc"),
            "input_example": TEXT_INPUT_EXAMPLE,
        }
    return out
