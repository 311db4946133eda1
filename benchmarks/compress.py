"""Benchmark: each compressible family's compressed model against its fp32 parent, same run
(issue 17).

For each family (dcgan, charlstm, transformer by default), trains a parent briefly with the
product's trainer (`aigc_core.training.engine.train_model`, the `cpu` preset with fewer steps:
`--dcgan-steps`, `--lm-steps`) on a built-in dataset (`digits` for the DCGAN, `python-docs` for
the language models, ingested as `aigc ingest` does), compresses it with the family's own
method (`aigc_core.compression.compress`), and measures both models as users get them (each
loaded through its family's `load_generator`):

- size on disk: weights + config;
- generation speed: images/s of `ImageGenerator.generate` (1,024 images, the product's
  batched path: bf16 where it is faster, else fp32) or characters/s of `TextGenerator.generate`
  (16 prompts cut from the held-out text, 200 new characters each), the best of `--repeats`
  runs with parent and compressed model interleaved (other processes share these cores);
- quality, the family's policy metric as its evaluation computes it: FID of 5,000 images in the
  snapshot's evaluator feature space (`aigc_core.evaluation.image_eval.evaluate_images`, as
  benchmarks/fid_equal_time.py), or held-out bits per character (`text_metrics`, 50,000
  held-out characters);
- the ratios (compressed over parent: size, speed) and the quality delta, with the family's
  tolerance check (`aigc_core.compression.within_tolerance`).

Issue 17's target: the compressed DCGAN generates at least 1.5x as fast as its parent with FID
within 10%, stated for an AVX2 machine: `--isa avx2` runs the measurements again in a child
process capped at AVX2 (ATen and oneDNN) on the same trained and compressed models, and prints
both. `--work DIR` keeps the models (a second run reuses them). Ends with one JSON line.

usage: python benchmarks/compress.py [--families dcgan charlstm transformer] [--isa avx2]
       [--dcgan-steps 1500] [--lm-steps 600] [--repeats 5] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import add_isa_option, isa_name, run_at_isa

from aigc_core import families
from aigc_core.compression import CompressInputs, compress, model_bytes, within_tolerance
from aigc_core.data.ingest import prepare
from aigc_core.data.snapshot import image_arrays, text_split
from aigc_core.evaluation.image_eval import evaluate_images
from aigc_core.evaluation.text_eval import text_metrics
from aigc_core.families.base import EvalInputs, TrainData
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.training import engine
from aigc_core.training.device import bf16_supported

log = logging.getLogger("benchmarks.compress")
CPU = torch.device("cpu")
DATASET = {"image": "digits", "text": "python-docs"}
IMAGES, PROMPTS, NEW_CHARS, PROMPT_CHARS = 1024, 16, 200, 8
TARGET_SPEED, TARGET_FID = 1.5, 0.10  # the DCGAN's, on AVX2


def snapshot(kind: str) -> dict:
    prepared = prepare(DATASET[kind])
    manifest = {"kind": kind, **prepared.extra}
    table = prepared.table
    if kind == "image":
        x_tr, y_tr = image_arrays(table, "train")
        x_va, y_va = image_arrays(table, "validation")
        data = TrainData(
            images=torch.from_numpy(x_tr),
            val_images=torch.from_numpy(x_va),
            labels=torch.from_numpy(y_tr),
            val_labels=torch.from_numpy(y_va),
            num_classes=len(manifest["label_set"]),
        )
    else:
        train, val = ("\n\n".join(text_split(table, s)) for s in ("train", "validation"))
        data = TrainData(text=train, val_text=val)
    return {"id": f"benchmark-{DATASET[kind]}", "table": table, "manifest": manifest, "data": data}


def train_parent(family, steps: int, snap: dict, work: Path) -> Path:
    """The parent's saved model folder: trained now, or by an earlier run into `work`."""
    folder = work / "parent"
    if (folder / WEIGHTS).is_file():
        log.info("%s: reusing the parent in %s", family.name, folder)
        return folder
    t0 = time.perf_counter()
    result = engine.train_model(
        family,
        "cpu",
        snap["data"],
        CPU,
        work / "checkpoints",
        overrides={"steps": steps, "checkpoint_every": 0},
    )
    save_model(folder, *result.served_module())
    log.info("%s: trained %d steps in %.0f s", family.name, steps, time.perf_counter() - t0)
    return folder


def compressed_model(family, parent: Path, snap: dict, work: Path) -> tuple[Path, float | None]:
    """The compressed model's folder and the seconds compressing took (None: reused)."""
    folder = work / "compressed"
    if (folder / WEIGHTS).is_file():
        return folder, None
    t0 = time.perf_counter()
    compress(family, CompressInputs(parent, folder, snap["table"], snap["manifest"]))
    seconds = time.perf_counter() - t0
    log.info("%s: compressed (%s) in %.0f s", family.name, family.compression.method, seconds)
    return folder, seconds


def speed(family, gens: dict, snap: dict, repeats: int) -> dict[str, float]:
    """Items per second of each generator, best of `repeats` interleaved runs."""
    if family.kind == "image":

        def run(gen):
            gen.generate(IMAGES, seed=1)
            return IMAGES

    else:
        val = snap["data"].val_text
        step = (len(val) - PROMPT_CHARS) // PROMPTS
        prompts = [val[i * step : i * step + PROMPT_CHARS] for i in range(PROMPTS)]

        def run(gen):
            gen.generate(prompts, NEW_CHARS, seed=1)
            return PROMPTS * NEW_CHARS

    for gen in gens.values():
        run(gen)  # warm-up: first-call allocations and kernel selection
    best = dict.fromkeys(gens, math.inf)
    for _ in range(repeats):
        for name, gen in gens.items():
            t0 = time.perf_counter()
            items = run(gen)
            best[name] = min(best[name], (time.perf_counter() - t0) / items)
    return {name: 1 / s for name, s in best.items()}


def quality(family, folder: Path, gen, snap: dict, work: Path) -> dict[str, float]:
    if family.kind == "image":
        inputs = EvalInputs(
            model_dir=folder,
            checkpoint_dir=work / "checkpoints",
            snapshot_id=snap["id"],
            table=snap["table"],
            manifest=snap["manifest"],
            evaluators_dir=work.parent / "evaluators",
        )
        return dict(evaluate_images(inputs, gen).metrics)
    return text_metrics(gen, snap["data"].text, snap["data"].val_text)[0]


def run_family(name: str, steps: int, repeats: int, work: Path, snaps: dict) -> dict:
    family = families.get(name)
    if family.kind not in snaps:
        snaps[family.kind] = snapshot(family.kind)
    snap = snaps[family.kind]
    work = work / name
    parent = train_parent(family, steps, snap, work)
    child, compress_s = compressed_model(family, parent, snap, work)
    folders = {"parent": parent, "compressed": child}
    gens = {k: family.load_generator(d / WEIGHTS, d / CONFIG) for k, d in folders.items()}
    rates = speed(family, gens, snap, repeats)
    scores = {k: quality(family, d, gens[k], snap, work) for k, d in folders.items()}
    metric, method = family.policy.metric, family.compression
    ok, reason = within_tolerance(
        scores["parent"], scores["compressed"], family.policy, method.tolerance
    )
    p, c = scores["parent"][metric], scores["compressed"][metric]
    row = {
        "family": name,
        "method": method.method,
        "parent_bytes": model_bytes(parent),
        "bytes": model_bytes(child),
        "size_ratio": round(model_bytes(child) / model_bytes(parent), 3),
        "unit": "images/s" if family.kind == "image" else "chars/s",
        "parent_speed": round(rates["parent"], 1),
        "speed": round(rates["compressed"], 1),
        "speed_ratio": round(rates["compressed"] / rates["parent"], 2),
        "metric": metric,
        "parent_quality": round(p, 4),
        "quality": round(c, 4),
        "quality_delta": round((c - p) / abs(p), 4),  # relative; > 0 is worse when lower is better
        "tolerance": method.tolerance,
        "within_tolerance": ok,
        "reason": reason,
        "compress_s": None if compress_s is None else round(compress_s, 1),
        "parent_train_steps": steps,
    }
    log.info("%s: %s", name, row)
    return row


def table(rows: list[dict], isa: str) -> None:
    print(
        f"\n[{isa}] {'family':12} {'method':18} {'size':>6} {'speed':>6} {'parent/s':>9} "
        f"{'compr./s':>9} {'metric':14} {'parent':>8} {'compr.':>8} {'delta':>7} ok"
    )
    for r in rows:
        print(
            f"[{isa}] {r['family']:12} {r['method']:18} {r['size_ratio']:6.3f} "
            f"{r['speed_ratio']:6.2f} {r['parent_speed']:9.1f} {r['speed']:9.1f} "
            f"{r['metric']:14} {r['parent_quality']:8.4f} {r['quality']:8.4f} "
            f"{r['quality_delta']:+7.2%} {'yes' if r['within_tolerance'] else 'NO'}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["dcgan", "charlstm", "transformer"])
    p.add_argument("--dcgan-steps", type=int, default=1500, help="the DCGAN parent's steps")
    p.add_argument("--lm-steps", type=int, default=600, help="each language model's steps")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each model")
    p.add_argument("--work", type=Path, help="keep (and reuse) the models here")
    add_isa_option(p)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        if a.work is None:
            a.work = Path(tmp)
            if a.isa:  # the capped child measures the same models
                sys.argv += ["--work", tmp]
        a.work.mkdir(parents=True, exist_ok=True)
        snaps: dict = {}
        rows = []
        for name in a.families:
            steps = a.dcgan_steps if families.get(name).kind == "image" else a.lm_steps
            rows.append(run_family(name, steps, a.repeats, a.work, snaps))
        result = summary(rows)
        if a.isa:
            result[a.isa] = run_at_isa(a.isa)
    table(rows, result["isa"])
    if a.isa:
        table(result[a.isa]["families"], a.isa)
    print(json.dumps(result))


def summary(rows: list[dict]) -> dict:
    """The JSON line: the DCGAN's speed ratio as the headline (else the first family's)."""
    head = next((r for r in rows if r["family"] == "dcgan"), rows[0])
    out = {
        "benchmark": "compress_cpu",
        "unit": f"{head['family']} {head['unit']}",
        "value": head["speed"],
        "baseline": head["parent_speed"],
        "ratio": head["speed_ratio"],
        "families": rows,
        "isa": isa_name(),
        "bf16": bf16_supported(CPU),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work competing for the CPU
    }
    if head["family"] == "dcgan":
        out["meets_target"] = (
            head["speed_ratio"] >= TARGET_SPEED and head["quality_delta"] <= TARGET_FID
        )
    return out


if __name__ == "__main__":
    main()
