"""One entry point for every family: presets, building a job, resuming, warm starts.

`train_model` is what the task layer and `launch.py` call with a `Family`
(`aigc_core.families.get(name)`): it builds the family's job from a preset (or from the config
stored in a checkpoint, when resuming), restores the latest valid checkpoint when asked,
warm-starts from a saved model when given one, and runs `loop.fit` with checkpoints written into
`checkpoint_dir` (by rank 0 only). The caller chooses the directory and reads the metrics it is
handed; nothing here knows about MLflow or Prefect, nor any family by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aigc_core import settings
from aigc_core.families.base import Family, TrainData
from aigc_core.models.io import CONFIG, WEIGHTS, read_config, read_weights
from aigc_core.training import ddp
from aigc_core.training.checkpoint import CheckpointError, load_latest, save_checkpoint
from aigc_core.training.loop import capture, fit, restore

__all__ = ["TrainData", "TrainResult", "configs", "train_config", "train_model"]

log = logging.getLogger(__name__)


def configs(
    family: Family,
    preset_name: str,
    overrides: dict | None = None,
    model_overrides: dict | None = None,
) -> tuple[Any, Any]:
    """(model config, train config) of the preset with the overrides applied: `overrides`
    sets train-config fields (e.g. {"steps": 50}: `steps`, the total number of steps, is a
    field of every family's train config), `model_overrides` model-config fields (e.g.
    {"g_width": 32}); a config file's `train` and `model` sections. Checked by
    `aigc_core.settings.resolve`: an unknown key, a wrong type, a value out of range or a
    data-dependent field (a vocabulary) raises `SettingsError` (a ValueError) naming it."""
    sections = {"model": model_overrides or {}, "train": overrides or {}}
    resolved = settings.resolve(family, preset_name, sections)
    return resolved.model_cfg, resolved.train_cfg


def train_config(family: Family, preset_name: str, overrides: dict | None = None):
    """The preset's train config with `overrides` (train-config fields) applied, checked (see
    `configs`)."""
    return configs(family, preset_name, overrides)[1]


@dataclass
class TrainResult:
    job: object
    family: Family
    model_cfg: object
    train_cfg: object
    history: list[dict]
    start_step: int  # 0 for a fresh run
    resumed_from: Path | None
    last_checkpoint: Path | None
    extra: dict = field(default_factory=dict)

    def served_module(self) -> tuple[nn.Module, dict]:
        """(module, config dict) that save_model writes: the part of the job the family serves
        (the DCGAN's generator, the VAE's decoder, a language model)."""
        return self.family.served_module(self.job).eval(), self.model_cfg.to_dict()


def train_model(
    family: Family,
    preset_name: str,
    data: TrainData,
    device: torch.device,
    checkpoint_dir: Path,
    *,
    resume: bool = False,
    init_from: Path | None = None,
    overrides: dict | None = None,
    model_overrides: dict | None = None,
    keep: int = 3,
    on_log: Callable[[int, dict], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train `family` at `preset_name`, checkpointing into `checkpoint_dir`.

    resume: continue from the newest valid checkpoint there (its stored config wins over the
    preset); if there is none, start fresh and say so. Without resume, existing checkpoints
    are an error (no silent overwrite). init_from: a saved model directory (weights + config)
    whose weights start the run (a warm start: fresh optimizers, the model's own config).
    stop: polled between steps (see `loop.fit`): a stop writes a checkpoint and raises
    `Interrupted`. (A caller whose start-up may see a signal checks before calling this.)
    overrides: train-config fields to change (e.g. {"steps": 50, "checkpoint_every": 10});
    `steps` sets the total number of steps of every family. model_overrides: model-config
    fields (e.g. {"g_width": 32}); a warm start keeps its model's config, so both together
    are an error. Both are checked by `configs`, before anything is read; a resumed run
    continues with the configs stored in its checkpoint.
    """
    name = family.name
    model_cfg, train_cfg = configs(family, preset_name, overrides, model_overrides)
    checkpoint_dir = Path(checkpoint_dir)
    latest = None
    if resume:
        latest = load_latest(checkpoint_dir, map_location=device)
        if latest is None:
            log.info("no checkpoint in %s yet; starting from step 0", checkpoint_dir)
    elif any(checkpoint_dir.glob("ckpt-*.pt")):
        raise CheckpointError(
            f"{checkpoint_dir} already holds checkpoints: pass resume to continue them"
        )
    if latest is not None:
        stored = latest[1]["config"]
        if stored["family"] != name:
            raise CheckpointError(f"{latest[0]} is a {stored['family']} checkpoint, not {name}")
        model_cfg = family.model_config(stored["model"])
        train_cfg = family.train_config(stored["train"])
    else:
        if init_from is not None:
            saved = read_config(Path(init_from) / CONFIG)
            if saved.get("family") != name:
                raise ValueError(
                    f"--init-from {init_from} is a {saved.get('family')} model, not {name}"
                )
            if model_overrides:
                keys = ", ".join(f"model.{k}" for k in model_overrides)
                raise settings.SettingsError(
                    f"--init-from {init_from}: a warm start keeps the saved model's config; "
                    f"drop the model settings ({keys})"
                )
            model_cfg = family.model_config(saved)  # the warm-started model's own architecture
        model_cfg = family.prepare(model_cfg, data)  # e.g. a language model's vocabulary

    job = family.build_job(model_cfg, train_cfg, data, device)
    start = 0
    if latest is not None:
        start = restore(job, latest[1])
        log.info("resumed from %s at step %d", latest[0], start)
    elif init_from is not None:
        warm_start(family.served_module(job), Path(init_from), saved, model_cfg, device)

    config = {
        "family": name,
        "preset": preset_name,
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
    }

    def save(step: int) -> Path | None:
        path = None
        if ddp.is_main():
            path = save_checkpoint(checkpoint_dir, step, capture(job, step, config), keep=keep)
        ddp.barrier()
        return path

    log_every = getattr(train_cfg, "log_every", None) or train_cfg.steps_per_epoch
    history = fit(
        job,
        train_cfg.total_steps,
        start_step=start,
        log_every=log_every,
        eval_every=getattr(train_cfg, "eval_every", 0),
        checkpoint_every=train_cfg.checkpoint_every,
        save=save,
        on_log=on_log,
        on_step=on_step,
        stop=stop,
    )
    last = sorted(checkpoint_dir.glob("ckpt-*.pt"))
    return TrainResult(
        job=job,
        family=family,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        history=history,
        start_step=start,
        resumed_from=latest[0] if latest else None,
        last_checkpoint=last[-1] if last else None,
    )


def warm_start(module: nn.Module, init_from: Path, saved: dict, model_cfg, device) -> None:
    """Load a saved model's weights into the module built for this data; weights that do not
    fit (the data changed a setting the family derives from it: a clip length, a class count)
    are a `ValueError` naming those settings, not torch's list of tensor shapes."""
    try:
        module.load_state_dict(read_weights(init_from / WEIGHTS, device))
    except RuntimeError as e:
        now = settings.config_dict(model_cfg)
        changed = [
            f"model.{k} {saved[k]!r} -> {now[k]!r}"
            for k in sorted(settings.derived_fields(model_cfg))
            if k in saved and k in now and saved[k] != now[k]
        ]
        why = (
            "this snapshot changes what the model derives from its data: " + ", ".join(changed)
            if changed
            else str(e).splitlines()[0]
        )
        raise ValueError(
            f"--init-from {init_from}: its weights do not fit the model for this snapshot ({why});"
            " warm-start it on data of the same shape, or train from scratch"
        ) from None
    log.info("warm start from %s", init_from)
