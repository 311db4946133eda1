"""One entry point for every family: presets, building a job, resuming, warm starts.

`train_model` is what the task layer and `launch.py` call: it builds the family's job from a
preset (or from the config stored in a checkpoint, when resuming), restores the latest valid
checkpoint when asked, warm-starts from a saved model when given one, and runs `loop.fit` with
checkpoints written into `checkpoint_dir` (by rank 0 only). The caller chooses the directory and
reads the metrics it is handed; nothing here knows about MLflow or Prefect.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aigc_core.models.io import CONFIG, WEIGHTS, config_from_dict, load_model
from aigc_core.training import ddp, gan, lm, vae
from aigc_core.training.checkpoint import CheckpointError, load_latest, save_checkpoint
from aigc_core.training.loop import capture, fit, restore

log = logging.getLogger(__name__)

IMAGE_FAMILIES = ("dcgan", "vae")
TEXT_FAMILIES = ("charlstm", "transformer")
FAMILIES = IMAGE_FAMILIES + TEXT_FAMILIES


def presets(family: str) -> dict[str, tuple]:
    """The presets of a family: name -> (model config, train config)."""
    if family == "dcgan":
        return gan.PRESETS
    if family == "vae":
        return vae.PRESETS
    if family in TEXT_FAMILIES:
        return lm.PRESETS[family]
    raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")


def preset(family: str, name: str) -> tuple:
    table = presets(family)
    if name not in table:
        raise ValueError(f"unknown preset {name!r} for {family}; choose one of {', '.join(table)}")
    return table[name]


def train_config(family: str, preset_name: str, overrides: dict | None = None):
    """The preset's train config with `overrides` applied, checked: every key must be a field
    of the family's train config, and `steps` (the total number of steps, a field of every
    family's config) a positive integer."""
    _, cfg = preset(family, preset_name)
    if not overrides:
        return cfg
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(map(repr, unknown))} for {family}; "
            f"choose from {', '.join(sorted(fields))}"
        )
    steps = overrides.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a whole number of at least 1, got {steps!r}")
    return dataclasses.replace(cfg, **overrides)


@dataclass
class TrainData:
    """What a family trains on: images (N, C, H, W) in [0, 1], or text."""

    images: torch.Tensor | None = None
    val_images: torch.Tensor | None = None
    text: str | None = None
    val_text: str | None = None


@dataclass
class TrainResult:
    job: object
    family: str
    model_cfg: object
    train_cfg: object
    history: list[dict]
    start_step: int  # 0 for a fresh run
    resumed_from: Path | None
    last_checkpoint: Path | None
    extra: dict = field(default_factory=dict)

    def serving_module(self) -> tuple[nn.Module, dict]:
        """(module, config dict) that save_model writes: the generator, the VAE's decoder, or
        the language model."""
        if self.family == "dcgan":
            return self.job.gan.generator.eval(), self.model_cfg.to_dict()
        if self.family == "vae":
            return self.job.model.decoder.eval(), self.model_cfg.to_dict()
        return self.job.model.eval(), self.model_cfg.to_dict()


def _train_cfg_from(family: str, d: dict):
    cls = gan.GANTrainConfig if family == "dcgan" else lm.TrainConfig
    return cls(**d)


def build_job(family: str, model_cfg, train_cfg, data: TrainData, device: torch.device):
    if family == "dcgan":
        _need(data.images, "images", family)
        return gan.GANJob(data.images, model_cfg, train_cfg, device)
    if family == "vae":
        _need(data.images, "images", family)
        return vae.VAEJob(data.images, model_cfg, train_cfg, device, data.val_images)
    _need(data.text, "text", family)
    _, train_ids, val_ids = lm.prepare_text(data.text, data.val_text, vocab=model_cfg.vocab)
    return lm.LMJob(train_ids, val_ids, model_cfg, train_cfg, device)


def _need(value, what: str, family: str) -> None:
    if value is None:
        raise ValueError(f"the {family} family trains on {what}; this snapshot has none")


def _init_module(family: str, job) -> nn.Module:
    """The part of the job that a saved model (warm start) fills."""
    return {"dcgan": lambda: job.gan.generator, "vae": lambda: job.model.decoder}.get(
        family, lambda: job.model
    )()


def train_model(
    family: str,
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
    model_cfg, train_cfg = preset(family, preset_name)
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
        if stored["family"] != family:
            raise CheckpointError(f"{latest[0]} is a {stored['family']} checkpoint, not {family}")
        model_cfg = config_from_dict(stored["model"])
        train_cfg = _train_cfg_from(family, stored["train"])
    else:
        if init_from is not None:
            saved = json.loads((Path(init_from) / CONFIG).read_text())
            if saved.get("family") != family:
                raise ValueError(
                    f"--init-from {init_from} is a {saved.get('family')} model, not {family}"
                )
            model_cfg = config_from_dict(saved)  # the warm-started model's own architecture
        train_cfg = train_config(family, preset_name, overrides)
        if family in TEXT_FAMILIES and not model_cfg.vocab:
            _need(data.text, "text", family)
            vocab, _, _ = lm.prepare_text(data.text, data.val_text)
            model_cfg = lm.with_vocab(model_cfg, vocab)

    job = build_job(family, model_cfg, train_cfg, data, device)
    start = 0
    if latest is not None:
        start = restore(job, latest[1])
        log.info("resumed from %s at step %d", latest[0], start)
    elif init_from is not None:
        src = load_model(Path(init_from) / WEIGHTS, Path(init_from) / CONFIG, device)
        _init_module(family, job).load_state_dict(src.state_dict())
        log.info("warm start from %s", init_from)

    config = {
        "family": family,
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
