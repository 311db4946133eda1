"""Task of the train stage: fit a model on a snapshot and track the run.

Checkpoints go under `<home>/runs/<run_id>/checkpoints/`; an active-run pointer names an
unfinished run so that resume "auto" continues it after a crash or SIGTERM, "never" refuses to
start while one exists, and a run still training in a live process is never taken over (the
rules: `aigc_core.training.runs`). A signal stops training after a checkpoint, or before
anything is written.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from prefect import task
from prefect.runtime import flow_run

from aigc_core import families, progress, provenance, settings, stages
from aigc_core.data.snapshot import open_snapshot, read_table
from aigc_core.models.io import save_model
from aigc_core.paths import Home
from aigc_core.stages import SnapshotRef, TrainedRun
from aigc_core.training import engine, interrupt, runs
from aigc_core.training.device import pick_device
from aigc_core.training.loop import Interrupted
from tasks.tracking import Tracker

log = logging.getLogger(__name__)


def train_run(
    snapshot: SnapshotRef,
    preset: str,
    home: str,
    family: str = "dcgan",
    device: str | None = None,
    resume: str = "auto",
    init_from: str | None = None,
    config: dict | None = None,
    parent_run_id: str | None = None,
) -> TrainedRun:
    """Train `family` at `preset` on a snapshot. resume: "auto" continues an unfinished run of
    the same family, snapshot, preset and settings from its last valid checkpoint; "never"
    refuses when one exists. init_from: a model URI or folder to warm-start from. config:
    settings overrides, {"model": {...}, "train": {...}} (`aigc_core.settings`), e.g.
    {"train": {"steps": 200}}. The run nests under `parent_run_id` (the pipeline run) when
    given. SIGTERM or SIGINT (in the main thread; else the caller's handler, see
    `interrupt.stop_on_signals`) raises `Interrupted`: before the run is created, with nothing
    written; during training, after a checkpoint."""
    with interrupt.stop_on_signals():
        runs.check_resume(resume)
        fam = families.get(family)
        resolved = settings.resolve(fam, preset, config)  # bad preset or settings
        train_cfg = resolved.train_cfg
        changed = {k: v for k, v in (config or {}).items() if k in ("model", "train") and v}
        if interrupt.stop_requested():  # a signal during the caller's start-up
            raise Interrupted.before_start()
        h = Home.resolve(home).ensure()
        tracker = Tracker(h)
        snap = open_snapshot(snapshot)
        table = read_table(snap)
        data, counts = runs.training_data(fam, snap, table)
        dev = pick_device(device)
        # runs with other settings than the preset's are other runs: their own pointer
        key = f"{preset}-{resolved.digest()[:12]}" if changed else preset
        active = runs.ActiveRun(h.runs, family, snap.id, key)
        start = active.start(resume)
        init, lineage = (None, {}) if start.resume_id else _init_source(tracker, init_from, h)
        if interrupt.stop_requested():  # a signal during start-up: stop before writing anything
            raise Interrupted.before_start()
        if start.stale:
            tracker.close_if_running(start.stale)
        if run_id := start.resume_id:
            tracker.reopen(run_id)
            log.info("resuming run %s", run_id)
        else:
            tags = stages.tags(
                stage="train",
                snapshot_id=snap.id,
                dataset=snap.name,
                family=family,
                preset=preset,
                flow_run_id=flow_run.get_id() or "",
                git_revision=provenance.git_revision(),
                code_digest=provenance.code_digest(),
                config_digest=resolved.digest(),
                init_from=init_from,
            )
            run_id = tracker.start_run(f"{family}-{snap.name}-{preset}", tags, parent_run_id)
        active.hold(run_id)
        run_dir = h.runs / run_id
        try:
            with tracker.run(run_id):
                if not start.resume_id:
                    params = {"preset": preset, "device": str(dev), "snapshot_id": snap.id}
                    model_cfg = resolved.model_cfg
                    _log_inputs(tracker, run_id, model_cfg, train_cfg, snap, table, params | counts)
                    tracker.log_dict(run_id, resolved.to_dict(), "resolved_config.json")
                result = engine.train_model(
                    fam,
                    preset,
                    data,
                    dev,
                    run_dir / "checkpoints",
                    resume=True,  # a fresh run's folder is empty; a resumed one continues
                    init_from=init,
                    overrides=changed.get("train"),
                    model_overrides=changed.get("model"),
                    on_log=lambda step, m: tracker.log_metrics(run_id, m, step=step),
                    on_step=lambda step, total: progress.report("train", step, total),
                    stop=interrupt.stop_requested,
                )
                save_model(run_dir / "model", *result.served_module())
        except BaseException:
            active.release(run_id)
            raise
        active.clear()
    trained = runs.trained_run(result, fam, snapshot, run_id, run_dir, preset, dev, lineage)
    return dataclasses.replace(trained, config_digest=resolved.digest())


def _log_inputs(tracker: Tracker, run_id: str, model_cfg, train_cfg, snap, table, params) -> None:
    """A new run's parameters (model and train configs, the vocabulary left out) and its input
    dataset: the snapshot's ids, splits and labels."""
    model = {f"model.{k}": v for k, v in model_cfg.to_dict().items() if k != "vocab"}
    train = {f"train.{k}": v for k, v in train_cfg.to_dict().items()}
    tracker.log_params(run_id, {**model, **train, **params})
    columns = [c for c in ("id", "split", "label") if c in table.column_names]
    df = table.select(columns).to_pandas()
    tracker.log_dataset(run_id, df, f"{snap.name}@{snap.id}", str(snap.path), digest=snap.id)


def _init_source(tracker: Tracker, init_from: str | None, h: Home) -> tuple[Path | None, dict]:
    """A local model folder for a warm start: `init_from` itself, or the weights and config of a
    logged model (models:/NAME@alias, runs:/...) downloaded under the home; and the registry
    version it came from (lineage)."""
    if not init_from:
        return None, {}
    if Path(init_from).is_dir():
        return Path(init_from), {"parent_model_uri": init_from}
    work_dir = h.runs / ".warm-start"
    shutil.rmtree(work_dir, ignore_errors=True)  # an alias may have moved since the last one
    folder = tracker.download_model(init_from, work_dir)
    lineage = {"parent_model_uri": init_from}
    if init_from.startswith("models:/"):
        name, _, alias = init_from.removeprefix("models:/").partition("@")
        v = tracker.alias_version(name, alias) if alias else None
        if v is not None:
            lineage["parent_version"] = v.version
    return folder, lineage


train = task(name="train")(train_run)  # the train stage of a flow
