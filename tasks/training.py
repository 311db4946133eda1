"""Task of the train stage: fit a model on a snapshot and track the run in MLflow."""

from __future__ import annotations

import logging

import torch
from prefect import task
from prefect.runtime import flow_run

from aigc_core import progress
from aigc_core.data.snapshot import find_snapshot, image_arrays, read_table
from aigc_core.models.io import save_model
from aigc_core.paths import Home
from aigc_core.training.device import pick_device
from aigc_core.training.gan import preset as gan_preset
from aigc_core.training.gan import train_gan
from tasks import mlflow_adapter as tracking

log = logging.getLogger(__name__)


def model_name(family: str, dataset: str) -> str:
    """One registered model per family and dataset, e.g. aigc-dcgan-digits."""
    return f"aigc-{family}-{dataset}"


@task(name="train")
def train(
    snapshot_id: str, preset: str, home: str, family: str = "dcgan", device: str | None = None
) -> dict:
    h = Home.resolve(home).ensure()
    tracking.configure(h)
    snap = find_snapshot(h.datasets, snapshot_id)
    model_cfg, train_cfg = gan_preset(preset)
    dev = pick_device(device)
    table = read_table(snap)
    pixels, _ = image_arrays(table, "train")
    run_id = tracking.start_run(
        run_name=f"{family}-{snap.name}-{preset}",
        tags={
            "snapshot_id": snapshot_id,
            "dataset": snap.name,
            "family": family,
            "preset": preset,
            "flow_run_id": flow_run.get_id() or "",
            "git_revision": tracking.git_revision(),
        },
    )
    with tracking.run_guard(run_id):
        tracking.log_params(
            run_id,
            {
                **{f"model.{k}": v for k, v in model_cfg.to_dict().items()},
                **{f"train.{k}": v for k, v in train_cfg.to_dict().items()},
                "preset": preset,
                "device": str(dev),
                "snapshot_id": snapshot_id,
                "train_images": len(pixels),
            },
        )
        tracking.log_dataset(
            run_id,
            table.select(["id", "split", "label"]).to_pandas(),
            name=f"{snap.name}@{snapshot_id}",
            source=str(snap.path),
            digest=snapshot_id,
        )
        gan, history = train_gan(
            torch.from_numpy(pixels),
            model_cfg,
            train_cfg,
            dev,
            on_step=lambda s, total: progress.report("train", s, total),
            on_epoch=lambda epoch, m: tracking.log_metrics(run_id, m, step=epoch),
        )
        model_dir = h.runs / run_id / "model"
        save_model(model_dir, gan.generator, model_cfg.to_dict())
    return {
        "run_id": run_id,
        "snapshot_id": snapshot_id,
        "family": family,
        "model_name": model_name(family, snap.name),
        "model_dir": str(model_dir),
        "preset": preset,
        "device": str(dev),
        "final_loss_g": history[-1]["loss_g"],
        "final_loss_d": history[-1]["loss_d"],
    }
