"""Task of the train stage: fit a model on a snapshot and track the run in MLflow.

Checkpoints live under the run's folder, `<home>/runs/<run_id>/checkpoints/`. While a run is
unfinished, `<home>/runs/active/<family>-<snapshot>-<preset>.json` names it (and, while it
trains, the process training it), so that `resume="auto"` finds it again after a crash or
SIGTERM and continues the same MLflow run from its checkpoint; the pointer is removed when
training completes. `resume="never"` refuses to start while such a run exists (the user
chooses: resume it, or remove the pointer file). A pointer whose run has no checkpoint (a failed
start, a process killed before its first checkpoint) holds nothing to resume: a failed start
removes it, and the next start replaces a dead process's one. A run still training in a live
process is never taken over, in either mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
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
from aigc_core.process import Owner
from aigc_core.training import engine, interrupt
from aigc_core.training.checkpoint import list_checkpoints
from aigc_core.training.device import pick_device
from aigc_core.training.loop import Interrupted
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


def _running(pointer: dict) -> bool:
    """Whether the process named in an active-run pointer still trains it. A pointer without one
    (an interrupted run, an older pointer) or from this very process is not held."""
    pid = pointer.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    return Owner(pid, int(pointer.get("start") or 0), str(pointer.get("host"))).alive()


def _read_pointer(pointer: Path) -> dict | None:
    try:
        owner = json.loads(pointer.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable active-run pointer %s: %s", pointer, e)
        return {}
    return owner if isinstance(owner, dict) else {}


def _mark_failed(run_id: str) -> None:
    """Close a run left RUNNING by a process that died before its first checkpoint."""
    try:
        if tracking.client().get_run(run_id).info.status == "RUNNING":
            tracking.client().set_terminated(run_id, "FAILED")
    except Exception as e:  # noqa: BLE001 - a run deleted since: nothing to close
        log.info("could not close run %s: %s", run_id, e)


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
    when one exists. init_from: a model URI or folder to warm-start from. overrides: train
    config fields, e.g. {"steps": 200} (every family counts its length in `steps`).

    SIGTERM or SIGINT (when this runs in the main thread; else the caller's handler, see
    `interrupt.stop_on_signals`) raises `Interrupted`: before the run is created, with nothing
    written; during training, after a checkpoint. A run that ends without a checkpoint (a
    failed start, a crash before the first one) leaves no active-run pointer behind."""
    with interrupt.stop_on_signals():
        return _train(snapshot_id, preset, home, family, device, resume, init_from, overrides)


def _train(snapshot_id, preset, home, family, device, resume, init_from, overrides) -> dict:
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    train_cfg = engine.train_config(family, preset, overrides)  # bad family, preset, settings
    if interrupt.stop_requested():  # a signal during the caller's start-up
        raise Interrupted.before_start()
    h = Home.resolve(home).ensure()
    tracking.configure(h)
    snap = find_snapshot(h.datasets, snapshot_id)
    table = read_table(snap)
    data, counts = _train_data(family, snap, table)
    dev = pick_device(device)
    pointer = _active_pointer(h, family, snapshot_id, preset)

    run_id, stale = None, None
    previous = _read_pointer(pointer)
    if previous is not None:
        before = previous.get("run_id")
        if before and _running(previous):
            raise RuntimeError(
                f"run {before} of {family} on {snapshot_id} ({preset}) is in progress in "
                f"process {previous['pid']}; stop it (SIGTERM) and resume with --resume auto"
            )
        if not before or not list_checkpoints(h.runs / before / "checkpoints"):
            stale = before  # it stopped before its first checkpoint: nothing to resume
        elif resume == "never":
            raise RuntimeError(
                f"run {before} of {family} on {snapshot_id} ({preset}) did not finish; "
                f"resume it (--resume auto) or remove {pointer} to start over"
            )
        else:
            run_id = before
    init, lineage = (None, {}) if run_id else _init_source(init_from, h.runs / ".warm-start")
    if interrupt.stop_requested():  # a signal during start-up: stop before writing anything
        raise Interrupted.before_start()

    if stale:
        log.warning("run %s stopped before its first checkpoint; starting a new run", stale)
        _mark_failed(stale)
    fresh = run_id is None
    if fresh:
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
    else:
        tracking.client().update_run(run_id, status="RUNNING")
        log.info("resuming run %s", run_id)
    me = dataclasses.asdict(Owner.me())
    write_bytes_atomic(pointer, json.dumps({"run_id": run_id, **me}).encode())
    run_dir = h.runs / run_id

    try:
        with tracking.run_guard(run_id):
            if fresh:
                model_cfg, _ = engine.preset(family, preset)
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
    except BaseException:
        if list_checkpoints(run_dir / "checkpoints"):  # resumable: no longer held by anyone
            with contextlib.suppress(OSError):
                write_bytes_atomic(pointer, json.dumps({"run_id": run_id}).encode())
        else:  # a failed start: nothing to resume, so nothing must block the next start
            pointer.unlink(missing_ok=True)
        raise
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
