"""One entry point for every family: presets, building a job, resuming, warm starts.

`train_model` is what the task layer and `launch.py` call with a `Family`
(`aigc_core.families.get(name)`): it builds the family's job from a preset (or from the config
stored in a checkpoint, when resuming), restores the latest valid checkpoint when asked,
warm-starts from a saved model when given one, and runs `loop.fit` with checkpoints written into
`checkpoint_dir` (by rank 0 only). The caller chooses the directory and reads the metrics it is
handed; nothing here knows about MLflow or Prefect, nor any family by name.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aigc_core.families.base import Family, TrainData
from aigc_core.models.io import CONFIG, WEIGHTS, read_config, read_weights
from aigc_core.training import ddp
from aigc_core.training.checkpoint import CheckpointError, load_latest, save_checkpoint
from aigc_core.training.loop import capture, fit, restore

__all__ = ["TrainData", "TrainResult", "train_config", "train_model"]

log = logging.getLogger(__name__)


def train_config(family: Family, preset_name: str, overrides: dict | None = None):
    """The preset's train config with `overrides` applied, checked: every key must be a field
    of the family's train config, and `steps` (the total number of steps, a field of every
    family's config) a positive integer."""
    cfg = family.preset(preset_name).train
    if not overrides:
        return cfg
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(map(repr, unknown))} for {family.name}; "
            f"choose from {', '.join(sorted(fields))}"
        )
    steps = overrides.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a whole number of at least 1, got {steps!r}")
    return dataclasses.replace(cfg, **overrides)


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
    overrides: train-config fields to change (e.g. {"steps": 50, "checkpoint_every": 10}),
    checked by `train_config`; `steps` sets the total number of steps of every family.
    """
    name = family.name
    model_cfg, train_cfg = family.preset(preset_name)
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
            model_cfg = family.model_config(saved)  # the warm-started model's own architecture
        train_cfg = train_config(family, preset_name, overrides)
        model_cfg = family.prepare(model_cfg, data)  # e.g. a language model's vocabulary

    job = family.build_job(model_cfg, train_cfg, data, device)
    start = 0
    if latest is not None:
        start = restore(job, latest[1])
        log.info("resumed from %s at step %d", latest[0], start)
    elif init_from is not None:
        family.served_module(job).load_state_dict(read_weights(Path(init_from) / WEIGHTS, device))
        log.info("warm start from %s", init_from)

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
