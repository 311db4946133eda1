"""Benchmark: FID of image families given the same training wall time (issue 18).

Ingests one image dataset as `aigc ingest` does (`aigc_core.data.ingest.prepare`: the built-in
`digits`, or a user's MNIST-format IDX files with `--path`, e.g. Fashion-MNIST's), then, for
each `family:preset` asked, trains a fresh model with the product's trainer
(`aigc_core.training.engine.train_model`) for the number of steps that fits the time budget on
this machine, and scores the saved model with the product's image evaluation
(`aigc_core.evaluation.image_eval`: FID in the snapshot's evaluator feature space against the
real-vs-real floor, precision/recall, and for conditional models per-class FID and the share of
images recognized as their requested class).

Equal wall time: each model's steps come from its own measured seconds per step (20 steps timed
after 3 warm-up steps on a throwaway job), so that `steps x s/step` is the budget; the training
run's own wall time is printed beside it. Steps are timed in CPU time of the calling thread, which
equals wall time for this compute-bound work on one thread (`OMP_NUM_THREADS=1`) on a quiet
machine, and stays fair when other processes share the cores (wall time would give the model
calibrated during a busy moment fewer steps); on more threads it undercounts, so the benchmark
requires one. The step count is set before training (not a cut-off
mid-run), so learning-rate schedules run their whole course.

The baseline is the first model listed (the DCGAN by default); ratios are baseline FID over each
model's FID (above 2: at most half the baseline's FID). Ends with one JSON line. The default
budget (60 s a model) keeps `make bench` short; evaluating the diffusion model (5,000 images at
its sampling steps) costs minutes on 2 cores. The issue's table used `--budget-s 300`.

A model is `family:preset`, optionally with settings as `aigc run --set` takes them, separated
by `;`: `"diffusion:cpu;model.block_out_channels=[16,32,64];train.batch_size=32"`.

usage: python benchmarks/fid_equal_time.py [--dataset digits] [--path IDX_FOLDER]
           [--budget-s 60] [--models dcgan:cpu dcgan:cpu-conditional diffusion:cpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from aigc_core import families, settings
from aigc_core.data.ingest import prepare
from aigc_core.data.snapshot import image_arrays
from aigc_core.evaluation.image_eval import evaluate_images
from aigc_core.families.base import EvalInputs, TrainData
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.training import engine

log = logging.getLogger("benchmarks.fid_equal_time")
CPU = torch.device("cpu")
CALIBRATION_STEPS, WARMUP_STEPS = 20, 3


def train_data(table, num_classes: int) -> TrainData:
    x_tr, y_tr = image_arrays(table, "train")
    x_va, y_va = image_arrays(table, "validation")
    return TrainData(
        images=torch.from_numpy(x_tr),
        val_images=torch.from_numpy(x_va),
        labels=torch.from_numpy(y_tr),
        val_labels=torch.from_numpy(y_va),
        num_classes=num_classes,
    )


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """`family:preset[;section.key=value...]` -> (family, preset, {"model": ..., "train": ...}),
    the items as `aigc run --set` takes them."""
    head, *sets = spec.split(";")
    name, _, preset = head.partition(":")
    return name, preset or "cpu", settings.load_overrides(None, sets)


def seconds_per_step(family, preset: str, data: TrainData, changes: dict) -> float:
    model_cfg, train_cfg = engine.configs(
        family, preset, changes.get("train"), changes.get("model")
    )
    job = family.build_job(family.prepare(model_cfg, data), train_cfg, data, CPU)
    for step in range(1, WARMUP_STEPS + 1):
        job.train_step(step)
    t0 = time.thread_time()
    for step in range(WARMUP_STEPS + 1, WARMUP_STEPS + CALIBRATION_STEPS + 1):
        out = job.train_step(step)
    float(next(iter(out.values())))  # wait for the last step's work
    return (time.thread_time() - t0) / CALIBRATION_STEPS


def run_model(spec: str, budget_s: float, data: TrainData, snapshot: dict, work: Path) -> dict:
    name, preset, changes = parse_spec(spec)
    family = families.get(name)
    per_step = seconds_per_step(family, preset, data, changes)
    steps = max(1, round(budget_s / per_step))
    log.info("%s: %.3f s/step -> %d steps for %.0f s", spec, per_step, steps, budget_s)
    t0 = time.perf_counter()
    result = engine.train_model(
        family,
        preset,
        data,
        CPU,
        work / f"model-{len(list(work.glob('model-*')))}" / "checkpoints",
        overrides={**changes.get("train", {}), "steps": steps, "checkpoint_every": 0},
        model_overrides=changes.get("model"),
    )
    train_s = time.perf_counter() - t0
    model_dir = result.last_checkpoint.parent.parent / "model"
    module, config = result.served_module()
    save_model(model_dir, module, config)
    generator = family.load_generator(model_dir / WEIGHTS, model_dir / CONFIG)
    t0 = time.perf_counter()
    scores = evaluate_images(
        EvalInputs(
            model_dir=model_dir,
            checkpoint_dir=result.last_checkpoint.parent,
            snapshot_id=snapshot["id"],
            table=snapshot["table"],
            manifest=snapshot["manifest"],
            evaluators_dir=work / "evaluators",
        ),
        generator,
    )
    eval_s = time.perf_counter() - t0
    m = scores.metrics
    row = {
        "model": spec,
        "steps": steps,
        "s_per_step": round(per_step, 4),
        "train_s": round(train_s, 1),
        "eval_s": round(eval_s, 1),
        "fid": round(m["fid"], 2),
        "fid_floor": round(m["fid_floor"], 2),
        "precision": round(m["precision"], 3),
        "recall": round(m["recall"], 3),
        "evaluator_accuracy": round(m.get("evaluator_accuracy", float("nan")), 4),
    }
    for key in ("fid_per_class", "fid_per_class_floor", "label_accuracy"):
        if key in m:
            row[key] = round(m[key], 3)
    log.info("%s: %s", spec, row)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", help="digits, or a name for --path")
    p.add_argument("--path", type=Path, help="a folder of MNIST-format IDX files")
    p.add_argument("--budget-s", type=float, default=60.0, help="training seconds per model")
    p.add_argument(
        "--models", nargs="+", default=["dcgan:cpu", "dcgan:cpu-conditional", "diffusion:cpu"]
    )
    p.add_argument("--work", type=Path, help="keep the trained models here (default: temporary)")
    a = p.parse_args()
    torch.set_num_threads(1)  # the calibration's CPU time is wall time on one thread
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prepared = prepare(a.dataset, path=a.path)
    table = prepared.table
    manifest = {"kind": "image", **prepared.extra}
    data = train_data(table, len(manifest["label_set"]))
    log.info(
        "%s: %d train / %d validation images", a.dataset, len(data.images), len(data.val_images)
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if a.work:
            a.work.mkdir(parents=True, exist_ok=True)
            tmp = a.work
        snapshot = {"id": "benchmark", "table": table, "manifest": manifest}
        for spec in a.models:
            rows.append(run_model(spec, a.budget_s, data, snapshot, Path(tmp)))
    base = rows[0]
    print(f"\n{'model':28} {'steps':>6} {'train s':>8} {'FID':>8} {'floor':>7} {'ratio':>6}")
    for r in rows:
        ratio = base["fid"] / r["fid"]
        r["ratio_to_baseline"] = round(ratio, 2)
        print(
            f"{r['model']:28} {r['steps']:6d} {r['train_s']:8.1f} {r['fid']:8.2f} "
            f"{r['fid_floor']:7.2f} {ratio:6.2f}"
        )
    best = rows[-1]
    print(
        json.dumps(
            {
                "benchmark": f"fid_equal_time_{a.dataset}",
                "unit": "FID",
                "value": best["fid"],
                "baseline": base["fid"],
                "ratio": round(base["fid"] / best["fid"], 2),
                "budget_s": a.budget_s,
                "models": rows,
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "isa": os.environ.get("ATEN_CPU_CAPABILITY", "default"),
            }
        )
    )


if __name__ == "__main__":
    main()
