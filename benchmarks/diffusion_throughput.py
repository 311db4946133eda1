"""Benchmark: what the diffusion family costs against the DCGAN, images/s, same run (issue 18).

Both families at their `cpu` presets (or `--preset`), built through the family contract as a
run builds them (`family.prepare` on the data, `family.build_job`, `family.served_module`,
saved and loaded back with `family.load_generator`), with random weights: throughput does not
depend on training. The data is random 28x28x1 images with labels in 10 classes, so the
diffusion preset is class-conditional (classifier-free guidance at its default weight).

- training images/s: `job.train_step` after 3 warm-up steps; the two families alternate
  rounds so that load from other processes hits both alike (median round);
- generation images/s: `generator.generate(n, seed, batch_size=...)` as evaluation and content
  batches call it (balanced labels; on the CPU one batch per core at a time, so n is two
  batches of 64 by default: evaluation's batches of 256 would make the 50-step run minutes
  long), the diffusion model at 10, 20 and 50 sampling steps, each run right after a DCGAN
  run (2048 images, batches of 256) that is its baseline; plus the diffusion model's default
  steps without guidance (w = 1: half the network evaluations).

The headline is generation at the diffusion preset's default sampling steps against the
DCGAN's generation; for context it reports the UNet's GFLOP per network evaluation (torch's
FlopCounterMode). Ends with one JSON line (DESIGN.md section 5). `--isa avx2` restarts the
process with ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 (the AVX2 path on an
AVX-512 machine).

usage: python benchmarks/diffusion_throughput.py [--quick] [--isa avx2] [--steps 10 20 50]
           [--n 128] [--batch-size 64] [--train-steps 4] [--rounds 3] [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ISAS, headline, isa_name, machine_load
from torch.utils.flop_counter import FlopCounterMode

from aigc_core import families
from aigc_core.families.base import TrainData
from aigc_core.models.io import CONFIG, WEIGHTS, save_model
from aigc_core.training.device import bf16_supported, pick_device

log = logging.getLogger("benchmarks.diffusion_throughput")
CLASSES = 10


def restart_with_isa(isa: str) -> None:
    """Re-run this process with the ISA's environment (torch reads it once, at import)."""
    env = ISAS[isa]
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    os.environ.update(env)
    os.execv(sys.executable, [sys.executable, *sys.argv])


def random_data(n: int = 2048) -> TrainData:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 28, 28, generator=g)
    labels = torch.randint(CLASSES, (n,), generator=g)
    return TrainData(
        images=images,
        val_images=images[:256],
        labels=labels,
        val_labels=labels[:256],
        num_classes=CLASSES,
    )


class Side:
    """One family at one preset: its training job and its generator (random weights)."""

    def __init__(self, name: str, preset: str, data: TrainData, device, folder: Path):
        self.name = name
        self.family = families.get(name)
        model_cfg, train_cfg = self.family.preset(preset)
        self.model_cfg = self.family.prepare(model_cfg, data)
        self.job = self.family.build_job(self.model_cfg, train_cfg, data, device)
        self.step = 0
        self.train(3)  # warm-up: allocator, oneDNN primitive caches
        module = self.family.served_module(self.job).eval()
        save_model(folder / name, module, self.model_cfg.to_dict())
        self.generator = self.family.load_generator(
            folder / name / WEIGHTS, folder / name / CONFIG, device
        )

    def train(self, steps: int) -> float:
        """Images/s over `steps` training steps (one host sync at the end)."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step += 1
            out = self.job.train_step(self.step)
        float(next(iter(out.values())))
        return steps * self.job.samples_per_step / (time.perf_counter() - t0)

    def generate(self, n: int, **options) -> float:
        """Images/s of one `generate` call of n images."""
        t0 = time.perf_counter()
        self.generator.generate(n, seed=1, **options)
        return n / (time.perf_counter() - t0)


def unet_gflop(side: Side, device) -> float:
    """GFLOP of one network evaluation of one image (torch's FlopCounterMode)."""
    module = side.generator.module
    cfg = module.cfg
    x = torch.randn(1, cfg.channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.tensor([500], device=device)
    labels = torch.zeros(1, dtype=torch.long, device=device) if cfg.num_classes else None
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(x, t, labels)
    return fc.get_total_flops() / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, 2 and 4 steps")
    p.add_argument("--isa", choices=sorted(ISAS), help="CPU kernels to use (default: best)")
    p.add_argument("--preset", default="cpu", help="preset of both families")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50], help="sampling steps")
    p.add_argument("--n", type=int, default=128, help="diffusion images per generation run")
    p.add_argument("--batch-size", type=int, default=64, help="diffusion generation batch")
    p.add_argument("--dcgan-n", type=int, default=2048, help="DCGAN images per generation run")
    p.add_argument("--train-steps", type=int, default=4, help="timed steps per round and side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu (the issue's target), cuda, or auto")
    a = p.parse_args()
    if a.isa:
        restart_with_isa(a.isa)
    if a.quick:
        a.steps, a.n, a.batch_size, a.dcgan_n = [2, 4], 32, 16, 256
        a.train_steps, a.rounds = 2, 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = pick_device(a.device)
    torch.manual_seed(0)
    data = random_data()
    with tempfile.TemporaryDirectory() as tmp:
        dcgan = Side("dcgan", a.preset, data, device, Path(tmp))
        diffusion = Side("diffusion", a.preset, data, device, Path(tmp))
    cfg = diffusion.model_cfg
    log.info(
        "diffusion %s: UNet %s, %d classes, %s sampler, guidance %g, default %d steps",
        a.preset,
        cfg.block_out_channels,
        cfg.num_classes,
        cfg.sampler,
        cfg.guidance,
        cfg.sampling_steps,
    )

    train_base, train_diff = [], []
    for _ in range(a.rounds):  # alternate, so machine load hits both sides alike
        train_base.append(dcgan.train(a.train_steps))
        train_diff.append(diffusion.train(a.train_steps))
    tb, td = statistics.median(train_base), statistics.median(train_diff)
    log.info("training: dcgan %.1f, diffusion %.1f images/s (x%.3f)", tb, td, td / tb)

    dcgan.generate(min(a.dcgan_n, 256))  # warm-up
    diffusion.generate(a.n, batch_size=a.batch_size, sampling_steps=1)
    gen: dict[int, tuple[float, float]] = {}  # steps -> (diffusion, its dcgan baseline)
    for steps in a.steps:
        base = dcgan.generate(a.dcgan_n)
        value = diffusion.generate(a.n, batch_size=a.batch_size, sampling_steps=steps)
        gen[steps] = (value, base)
        log.info(
            "generation, %d steps: diffusion %.2f, dcgan %.1f images/s (x%.4f)",
            steps,
            value,
            base,
            value / base,
        )
    default = cfg.sampling_steps
    if default not in gen:
        base = dcgan.generate(a.dcgan_n)
        gen[default] = (diffusion.generate(a.n, batch_size=a.batch_size), base)
    # the conditional half only
    unguided = diffusion.generate(a.n, batch_size=a.batch_size, guidance=1.0)
    log.info("generation, %d steps, no guidance: %.2f images/s", default, unguided)
    gflop = unet_gflop(diffusion, device)

    value, baseline = gen[default]
    result = {
        **headline(f"diffusion_throughput_{device.type}", "images/s", value, baseline, 2, 4),
        "sampling_steps": default,
        "train_images_per_s": round(td, 1),
        "train_baseline": round(tb, 1),
        "train_ratio": round(td / tb, 3),
        **{f"generate_{s}_steps": round(v, 2) for s, (v, _) in sorted(gen.items())},
        **{f"ratio_{s}_steps": round(v / b, 4) for s, (v, b) in sorted(gen.items())},
        f"generate_{default}_steps_no_guidance": round(unguided, 2),
        "guidance": cfg.guidance,
        "sampler": cfg.sampler,
        "unet_gflop_per_eval": round(gflop, 4),
        "gflops": round(value * gflop * default * (1 if cfg.guidance in (0, 1) else 2), 1),
        "preset": a.preset,
        "n": a.n,
        "batch_size": a.batch_size,
        "dcgan_n": a.dcgan_n,
        "train_batch": diffusion.job.samples_per_step,
        "train_batch_baseline": dcgan.job.samples_per_step,
        "rounds": a.rounds,
        "train_steps_per_round": a.train_steps,
        "bf16": bf16_supported(device),
        "device": str(device),
        "isa": isa_name(),
        **machine_load(),
        "quick": a.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
