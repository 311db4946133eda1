"""A training run's life outside the training loop: what it trains on, and its active-run pointer.

While a run is unfinished, `<runs>/active/<family>-<snapshot>-<preset>.json` names it (and, while
it trains, the process training it: `aigc_core.process.Owner`), so that resume "auto" finds it
again after a crash or SIGTERM and continues the same run from its checkpoint; the pointer is
removed when training completes. Resume "never" refuses to start while such a run exists (the
user chooses: resume it, or remove the pointer file). A pointer whose run has no checkpoint (a
failed start, a process killed before its first checkpoint) holds nothing to resume: a failed
start removes it, and the next start replaces a dead process's one. A run still training in a
live process is never taken over, in either mode. Checkpoints live in `<runs>/<run_id>/checkpoints`.

Nothing here knows about MLflow: the caller closes a stale run and creates or reopens runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import torch

from aigc_core import names
from aigc_core.atomic import write_bytes_atomic
from aigc_core.data.audio import audio_data
from aigc_core.data.snapshot import Snapshot, image_arrays, text_split
from aigc_core.families.base import Family, TrainData
from aigc_core.process import Owner
from aigc_core.stages import SnapshotRef, TrainedRun
from aigc_core.training.checkpoint import list_checkpoints

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never")


def check_resume(resume: str) -> str:
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    return resume


def training_data(family: Family, snapshot: Snapshot, table) -> tuple[TrainData, dict]:
    """The family's training data from a snapshot's table (its kind must be the family's), and a
    few counts to log: images (N, C, H, W) in [0, 1], text, or audio clips (N, 1, L) int16 PCM
    at the snapshot's rate, with labels for images and audio. An empty validation split is
    allowed (text: the trainer holds out the end of the training text)."""
    kind = snapshot.manifest.get("kind", "image")
    if kind != family.kind:
        raise ValueError(
            f"the {family.name} family trains on {family.kind} snapshots; snapshot {snapshot.id} "
            f"({snapshot.name}) holds {kind}: ingest a {family.kind} dataset"
        )
    if kind == "image":
        pixels, labels = image_arrays(table, "train")
        try:
            val, val_labels = (torch.from_numpy(a) for a in image_arrays(table, "validation"))
        except Exception:  # noqa: BLE001 - an empty validation split is allowed
            val = val_labels = None
        data = TrainData(
            images=torch.from_numpy(pixels),
            val_images=val,
            labels=torch.from_numpy(labels),
            val_labels=val_labels,
            num_classes=len(snapshot.manifest.get("label_set", ())),
        )
        return data, {"train_images": len(pixels)}
    if kind == "audio":
        return _audio_training_data(snapshot, table)
    train_text = "\n\n".join(text_split(table, "train"))
    try:
        val_text = "\n\n".join(text_split(table, "validation"))
    except Exception:  # noqa: BLE001 - empty validation split: hold out the end of train
        val_text = None
    return TrainData(text=train_text, val_text=val_text or None), {
        "train_characters": len(train_text),
        "validation_characters": len(val_text or ""),
    }


def _audio_training_data(snapshot: Snapshot, table) -> tuple[TrainData, dict]:
    """An audio snapshot's clips as (N, 1, L) int16 PCM with their labels, the label set from
    the manifest (a split may miss a class). An empty validation split is allowed."""
    manifest = snapshot.manifest
    train = audio_data(table, "train", manifest)
    has_val = pc.any(pc.equal(table.column("split"), "validation")).as_py()
    val = audio_data(table, "validation", manifest) if has_val else None
    data = TrainData(
        audio=torch.from_numpy(train.pcm)[:, None],  # (N, 1, L) int16
        val_audio=None if val is None else torch.from_numpy(val.pcm)[:, None],
        sample_rate=train.sample_rate,
        labels=torch.from_numpy(train.labels),
        val_labels=None if val is None else torch.from_numpy(val.labels),
        num_classes=len(manifest.get("label_set", ())) or len(train.label_names),
    )
    counts = {"train_clips": len(train.pcm), "validation_clips": 0 if val is None else len(val.pcm)}
    return data, counts


@dataclass(frozen=True)
class Start:
    """How a start goes on: continue `resume_id`, or (None) start a new run; `stale` names a run
    that stopped before its first checkpoint, to be closed as failed."""

    resume_id: str | None
    stale: str | None = None


class ActiveRun:
    """The active-run pointer of one family, snapshot and preset under a runs folder."""

    def __init__(self, runs: Path, family: str, snapshot_id: str, preset: str):
        self.runs = Path(runs)
        self.path = self.runs / "active" / f"{family}-{snapshot_id}-{preset}.json"
        self.what = f"{family} on {snapshot_id} ({preset})"

    def read(self) -> dict | None:
        """The pointer's content; None when there is none, {} when it is unreadable."""
        try:
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable active-run pointer %s: %s", self.path, e)
            return {}
        return owner if isinstance(owner, dict) else {}

    def has_checkpoint(self, run_id: str) -> bool:
        return bool(list_checkpoints(self.runs / run_id / "checkpoints"))

    def start(self, resume: str) -> Start:
        """Decide how a start goes on (see the module docstring). RuntimeError when the run is
        in progress in a live process, or unfinished and `resume` is "never"."""
        check_resume(resume)
        previous = self.read()
        if previous is None:
            return Start(None)
        before = previous.get("run_id")
        if before and running(previous):
            raise RuntimeError(
                f"run {before} of {self.what} is in progress in process {previous['pid']}; "
                "stop it (SIGTERM) and resume with --resume auto"
            )
        if not before or not self.has_checkpoint(before):  # stopped before its first one
            if before:
                log.warning(
                    "run %s stopped before its first checkpoint; starting a new run", before
                )
            return Start(None, stale=before)
        if resume == "never":
            raise RuntimeError(
                f"run {before} of {self.what} did not finish; "
                f"resume it (--resume auto) or remove {self.path} to start over"
            )
        return Start(before)

    def hold(self, run_id: str) -> None:
        """Name the run and this process as the one training it."""
        me = dataclasses.asdict(Owner.me())
        write_bytes_atomic(self.path, json.dumps({"run_id": run_id, **me}).encode())

    def release(self, run_id: str) -> None:
        """After a run stopped or failed: a resumable run's pointer stays, held by no process;
        one without a checkpoint goes, so nothing blocks the next start."""
        if self.has_checkpoint(run_id):
            with contextlib.suppress(OSError):
                write_bytes_atomic(self.path, json.dumps({"run_id": run_id}).encode())
        else:
            self.path.unlink(missing_ok=True)

    def clear(self) -> None:
        """The run completed: nothing left to resume."""
        self.path.unlink(missing_ok=True)


def running(pointer: dict) -> bool:
    """Whether the process named in an active-run pointer still trains it. A pointer without one
    (an interrupted run, an older pointer) or from this very process is not held."""
    pid = pointer.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    return Owner(pid, int(pointer.get("start") or 0), str(pointer.get("host"))).alive()


def trained_run(
    result,
    family: Family,
    snapshot: SnapshotRef,
    run_id: str,
    run_dir: Path,
    preset: str,
    device,
    lineage: dict,
) -> TrainedRun:
    """The train stage's record of a finished run (`result`: `engine.train_model`'s), its model
    saved in `run_dir / "model"`; `lineage`: a warm start's parent_model_uri / parent_version."""
    last = result.history[-1] if result.history else {}
    return TrainedRun(
        run_id=run_id,
        snapshot=snapshot,
        family=family.name,
        model_name=names.registered_model_name(family.name, snapshot.name),
        model_dir=str(run_dir / "model"),
        checkpoint_dir=str(run_dir / "checkpoints"),
        preset=preset,
        device=str(device),
        steps=result.train_cfg.total_steps,
        resumed_from_step=result.start_step,
        samples_per_s=last.get("samples_per_s"),
        final={k: last.get(m) for k, m in family.final_metrics.items()},
        **lineage,
    )
