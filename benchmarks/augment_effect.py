"""Benchmark: what augmentation does to FID with little data (issue 17).

Ingests `digits` (or a user's MNIST-format IDX files with `--path`) as `aigc ingest` does
(`aigc_core.data.ingest.prepare`), keeps a seeded, label-stratified `--fraction` (10%) of the
train split, and trains the family's cpu preset on it twice with the product's trainer
(`aigc_core.training.engine.train_model`): the baseline `cpu` and `cpu-augment`, which differs
only in `train.augment.enabled` (`aigc_core.training.augment`). Both runs take the same steps
and draw the same batches and latents (augmentation has its own per-step generator), so the
augmentation is the only difference. Each saved model is scored with the product's image
evaluation (`aigc_core.evaluation.image_eval.evaluate_images`): FID in the snapshot's evaluator
feature space against the held-out split, beside the real-vs-real floor (the full train split
against the held-out one), and the memorization rate against the train split.

The ratio is the baseline's FID over the augmented run's (above 1: augmentation helped); with
`--seeds 0 1 2` the runs are interleaved (baseline, augmented, per seed) and the means
compared, since one GAN run's FID varies from seed to seed. Ends with one JSON line.

At the dcgan cpu preset (3,000 steps) each run took 10-16 minutes on one core of a loaded
2-core AVX-512 machine (two seeds: 55 minutes); `--steps` shortens both alike. Run with
OMP_NUM_THREADS=1 for a steady per-core figure.

usage: OMP_NUM_THREADS=1 python benchmarks/augment_effect.py [--family dcgan] [--fraction 0.1]
           [--seeds 0] [--steps N] [--set train.augment.p=0.3 ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aigc_core import families, settings
from aigc_core.data.ingest import prepare
from aigc_core.data.snapshot import image_arrays
from aigc_core.evaluation.image_eval import evaluate_images
from aigc_core.families.base import EvalInputs, TrainData
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.training import engine

log = logging.getLogger("benchmarks.augment_effect")
CPU = torch.device("cpu")
ARMS = ("cpu", "cpu-augment")  # baseline first


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded `fraction` of each label's rows (at least one per label)."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep.append(rng.choice(rows, max(1, round(fraction * len(rows))), replace=False))
    return np.sort(np.concatenate(keep))


def subset_data(table, fraction: float, seed: int, num_classes: int) -> TrainData:
    x_tr, y_tr = image_arrays(table, "train")
    x_va, y_va = image_arrays(table, "validation")
    keep = stratified_subset(y_tr, fraction, seed)
    return TrainData(
        images=torch.from_numpy(x_tr[keep]),
        val_images=torch.from_numpy(x_va),
        labels=torch.from_numpy(y_tr[keep]),
        val_labels=torch.from_numpy(y_va),
        num_classes=num_classes,
    )


def run(family, preset: str, seed: int, train: dict, data: TrainData, snapshot, work: Path):
    """Train `preset` with `train` overrides and seed `seed`, save and score it; one row."""
    folder = work / f"{preset}-seed{seed}"
    t0 = time.perf_counter()
    result = engine.train_model(
        family,
        preset,
        data,
        CPU,
        folder / "checkpoints",
        overrides={**train, "seed": seed, "checkpoint_every": 0},
    )
    train_s = time.perf_counter() - t0
    module, config = result.served_module()
    save_model(folder / "model", module, config)
    generator = family.load_generator(folder / "model" / WEIGHTS, folder / "model" / CONFIG)
    t0 = time.perf_counter()
    scores = evaluate_images(
        EvalInputs(
            model_dir=folder / "model",
            checkpoint_dir=result.last_checkpoint.parent,
            snapshot_id=snapshot["id"],
            table=snapshot["table"],
            manifest=snapshot["manifest"],
            evaluators_dir=work / "evaluators",
        ),
        generator,
    )
    m = scores.metrics
    row = {
        "preset": preset,
        "seed": seed,
        "augment": result.train_cfg.augment.enabled,
        "steps": result.train_cfg.total_steps,
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - t0, 1),
        "fid": round(m["fid"], 3),
        "fid_floor": round(m["fid_floor"], 3),
        "fid_over_floor": round(m["fid"] / m["fid_floor"], 2),
        "precision": round(m["precision"], 3),
        "recall": round(m["recall"], 3),
        "memorization_rate": round(m["memorization_rate"], 4),
    }
    log.info("%s", row)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="dcgan", help="an image family with a cpu-augment preset")
    p.add_argument("--dataset", default="digits", help="digits, or a name for --path")
    p.add_argument("--path", type=Path, help="a folder of MNIST-format IDX files")
    p.add_argument("--fraction", type=float, default=0.1, help="of the train split, per label")
    p.add_argument("--subset-seed", type=int, default=0, help="which images are kept")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument("--steps", type=int, help="both runs' steps (default: the preset's)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="train settings for both runs, as `aigc run --set` (e.g. train.augment.p=0.3)",
    )
    p.add_argument("--work", type=Path, help="keep the models here (default: a temporary folder)")
    a = p.parse_args()
    if not 0 < a.fraction <= 1:
        p.error(f"--fraction must lie in (0, 1], got {a.fraction}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    family = families.get(a.family)
    missing = [arm for arm in ARMS if arm not in family.presets]
    if missing:
        p.error(f"the {a.family} family has no preset {', '.join(missing)}")
    overrides = settings.load_overrides(None, a.sets)
    if set(overrides) - {"train"}:
        p.error("--set takes train settings only (train.KEY=VALUE)")
    train = {**overrides.get("train", {}), **({"steps": a.steps} if a.steps else {})}
    prepared = prepare(a.dataset, path=a.path)
    manifest = {"kind": "image", **prepared.extra}
    data = subset_data(prepared.table, a.fraction, a.subset_seed, len(manifest["label_set"]))
    log.info(
        "%s: training on %d of the train split's images (%.0f%%, stratified), %d held out",
        a.dataset,
        len(data.images),
        100 * a.fraction,
        len(data.val_images),
    )
    snapshot = {"id": "benchmark", "table": prepared.table, "manifest": manifest}
    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in a.seeds:  # interleaved: the machine's load falls on both arms alike
            for arm in ARMS:
                rows.append(run(family, arm, seed, train, data, snapshot, work))
    wall_s = time.perf_counter() - t_all

    def mean(arm: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rows if r["preset"] == arm)

    base, aug = (mean(arm, "fid") for arm in ARMS)
    floor = mean(ARMS[0], "fid_floor")
    print(
        f"\n{'preset':12} {'seed':>4} {'steps':>6} {'train s':>8} {'FID':>8} {'floor':>7} "
        f"{'FID/floor':>9} {'memorized':>9}"
    )
    for r in rows:
        print(
            f"{r['preset']:12} {r['seed']:4d} {r['steps']:6d} {r['train_s']:8.1f} {r['fid']:8.2f} "
            f"{r['fid_floor']:7.2f} {r['fid_over_floor']:9.2f} {r['memorization_rate']:9.3f}"
        )
    print(
        f"mean FID: {base:.2f} without, {aug:.2f} with augmentation (floor {floor:.2f}); "
        f"ratio {base / aug:.2f} (above 1: augmentation helped); wall {wall_s:.0f} s"
    )
    print(
        json.dumps(
            {
                "benchmark": f"augment_effect_{a.family}_{a.dataset}",
                "unit": "FID",
                "value": round(aug, 3),
                "baseline": round(base, 3),
                "ratio": round(base / aug, 3),
                "fid_floor": round(floor, 3),
                "fraction": a.fraction,
                "train_images": len(data.images),
                "seeds": a.seeds,
                "wall_s": round(wall_s, 1),
                "runs": rows,
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "isa": os.environ.get("ATEN_CPU_CAPABILITY", "default"),
            }
        )
    )


if __name__ == "__main__":
    main()
