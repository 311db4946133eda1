"""Training throughput: the project's DCGAN step against a naive PyTorch port of the seed's loop.

Both run the seed's exact DCGAN (generator widths 128, discriminator 64/128, 28x28x1, z 100) at
batch 128 on this machine's CPU (or `--device cuda`), in this process, alternating rounds so
that load from other processes hits both sides alike. The baseline is our own copy of the
naive port (as in shared/bench/seed_torch_dcgan.py): fp32, the seed's order (G predicts fakes
without grad, D trains on real then fake in two updates, G trains on fresh noise through a D
that still accumulates weight gradients), a `.item()` host sync after every update. The
project's path is aigc_core.training.gan.GANJob: bf16 autocast where the CPU supports it,
channels_last, fused Adam, one G forward per step, D on real and fake in one forward, no host
sync inside the loop, the generator's 1-channel output convolution by taps and the
discriminator's dropout masks from 16-bit draws (aigc_core/models/dcgan.py).

images/s counts real images seen by D per second on both sides. GFLOP/s uses the FLOPs that
torch's FlopCounterMode counts for one step of each side (convolutions and matmuls, forward
and backward). For context, `ratio_ceiling` is the ratio this step would reach running every
FLOP at the speed of a large bf16 (or fp32) matmul measured in the same run. It then reports
samples/s for every family at its cpu preset (images for the image models, characters for the
language models).

Ends with one JSON line (DESIGN.md section 5).
`--isa avx2` runs it a second time in a child process capped at AVX2 (ATen and oneDNN; bf16
then measures slower than fp32 and is not used) and prints both, the AVX2 figures under "avx2".

usage: python benchmarks/train_throughput.py [--steps N] [--rounds R] [--quick] [--device D]
           [--isa avx2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from common import add_isa_option, isa_name, matmul_peak_gflops, run_at_isa
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from aigc_core import families
from aigc_core.families.base import TrainData
from aigc_core.models.dcgan import DCGANConfig
from aigc_core.training.device import bf16_supported, pick_device
from aigc_core.training.gan import GANJob, GANTrainConfig

BATCH = 128


# --- the baseline: a naive port of the seed's loop (own copy) --------------------------------
def seed_generator(z_dim=100):
    return nn.Sequential(
        nn.Linear(z_dim, 7 * 7 * 128, bias=False),
        nn.BatchNorm1d(7 * 7 * 128, momentum=0.2),
        nn.LeakyReLU(0.2),
        nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 128, 5, 1, 2, bias=False),
        nn.BatchNorm2d(128, momentum=0.2),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(128, 128, 5, 2, 2, output_padding=1, bias=False),
        nn.BatchNorm2d(128, momentum=0.2),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(128, 128, 5, 2, 2, output_padding=1, bias=False),
        nn.BatchNorm2d(128, momentum=0.2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(128, 1, 5, 1, 2, bias=False),
        nn.Tanh(),
    )


def seed_discriminator():
    return nn.Sequential(
        nn.Conv2d(1, 64, 5, 2, 2),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Conv2d(64, 128, 5, 2, 2),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 1),
    )


class NaiveSeedLoop:
    def __init__(self, x_train: np.ndarray, batch: int = BATCH, device=torch.device("cpu")):
        torch.manual_seed(0)
        self.rng = np.random.default_rng(0)
        self.x, self.b, self.dev = x_train, batch, device
        self.G, self.D = seed_generator().to(device), seed_discriminator().to(device)
        self.og = torch.optim.Adam(self.G.parameters(), 1e-4)
        self.od = torch.optim.Adam(self.D.parameters(), 1e-4)
        self.bce = nn.BCEWithLogitsLoss()
        self.ones = torch.ones(batch, 1, device=device)
        self.zeros = torch.zeros(batch, 1, device=device)

    def step(self) -> None:
        with torch.no_grad():
            self.G.eval()
            fake = self.G(torch.randn(self.b, 100, device=self.dev))
            self.G.train()
        idx = self.rng.integers(0, len(self.x), self.b)
        real = torch.from_numpy(self.x[idx]).to(self.dev)
        for imgs, lab in ((real, self.ones), (fake, self.zeros)):
            self.od.zero_grad()
            loss = self.bce(self.D(imgs), lab)
            loss.backward()
            self.od.step()
            loss.item()
        self.og.zero_grad()
        g_loss = self.bce(self.D(self.G(torch.randn(self.b, 100, device=self.dev))), self.ones)
        g_loss.backward()
        self.og.step()
        g_loss.item()

    def sync(self) -> None:
        pass


# --- the project's path -----------------------------------------------------------------------
class ProjectLoop:
    def __init__(self, images01: torch.Tensor, batch: int = BATCH, device=torch.device("cpu")):
        cfg = GANTrainConfig(batch_size=batch, lr=1e-4)
        self.job = GANJob(images01, DCGANConfig(), cfg, device)
        self.n, self.last = 0, None

    def step(self) -> None:
        self.n += 1
        self.last = self.job.train_step(self.n)

    def sync(self) -> None:
        if self.last is not None:
            float(self.last["loss_d"])


def step_flops(loop) -> float:
    with FlopCounterMode(display=False) as fc:
        loop.step()
    loop.sync()
    return float(fc.get_total_flops())


def time_steps(loop, steps: int) -> float:
    """Seconds per step over `steps` steps (one host sync at the end)."""
    t = time.perf_counter()
    for _ in range(steps):
        loop.step()
    loop.sync()
    return (time.perf_counter() - t) / steps


def family_samples_per_s(name: str, steps: int, device: torch.device) -> float:
    """samples/s of family `name` at its cpu (or, on CUDA, gpu) preset on synthetic data (after
    2 warm-up steps)."""
    family = families.get(name)
    model_cfg, train_cfg = family.preset("gpu" if device.type == "cuda" else "cpu")
    g = torch.Generator().manual_seed(0)
    if family.kind == "image":
        data = TrainData(images=torch.rand(2048, 1, 28, 28, generator=g))
    elif family.kind == "audio":  # 8 kHz clips of 4096 samples (the built-in notes' shape)
        clips = (torch.rand(256, 1, 4096, generator=g) * 2 - 1) * 8000
        data = TrainData(audio=clips.to(torch.int16), sample_rate=8000)
    else:  # sentences of 6 words (a sentence-level model needs them: textvae)
        words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "cat"]
        idx = torch.randint(len(words), (40_002,), generator=g).view(-1, 6).tolist()
        data = TrainData(text=" ".join(" ".join(words[i] for i in s) + "." for s in idx) + "\n")
    model_cfg = family.prepare(model_cfg, data)  # a language model's vocabulary
    job = family.build_job(model_cfg, train_cfg, data, device)
    for s in (1, 2):
        job.train_step(s)
    t = time.perf_counter()
    for s in range(3, steps + 3):
        losses = job.train_step(s)
    float(next(iter(losses.values())))
    return steps * job.samples_per_step / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=4, help="timed steps per round and side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--family-steps", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="1 round of 2 steps (a smoke check)")
    p.add_argument("--device", default="cpu", help="cpu (the issue's target), cuda, or auto")
    add_isa_option(p)
    a = p.parse_args()
    device = pick_device(a.device)
    if a.quick:
        a.steps, a.rounds, a.family_steps = 2, 1, 3
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(10_000, 1, 28, 28)).astype("float32")
    base = NaiveSeedLoop(x, device=device)
    ours = ProjectLoop(torch.from_numpy((x + 1) / 2), device=device)
    flops_base, flops_ours = step_flops(base), step_flops(ours)
    for loop in (base, ours):  # warm-up (allocator, oneDNN primitive caches)
        time_steps(loop, 2)
    t_base, t_ours = [], []
    for _ in range(a.rounds):  # alternate, so machine load hits both sides alike
        t_base.append(time_steps(base, a.steps))
        t_ours.append(time_steps(ours, a.steps))
    sb, so = statistics.median(t_base), statistics.median(t_ours)
    peak = matmul_peak_gflops(device, torch.bfloat16 if bf16_supported(device) else torch.float32)
    result = {
        "benchmark": f"train_dcgan_{device.type}",
        "isa": isa_name(),
        "unit": "images/s",
        "value": round(BATCH / so, 1),
        "baseline": round(BATCH / sb, 1),
        "ratio": round(sb / so, 2),
        "batch": BATCH,
        "threads": torch.get_num_threads(),
        "bf16": bf16_supported(device),
        "device": str(device),
        "gflop_per_step": round(flops_ours / 1e9, 2),
        "gflop_per_step_baseline": round(flops_base / 1e9, 2),
        "gflops": round(flops_ours / so / 1e9, 1),
        "gflops_baseline": round(flops_base / sb / 1e9, 1),
        "matmul_peak_gflops": round(peak, 1),
        "ratio_ceiling": round(peak * 1e9 / flops_ours * sb, 2),
        "rounds": a.rounds,
        "steps_per_round": a.steps,
    }
    for family in families.BUILTIN:
        preset_name = "gpu" if device.type == "cuda" else "cpu"
        result[f"{family}_{preset_name}_samples_per_s"] = round(
            family_samples_per_s(family, a.family_steps, device), 1
        )
    if a.isa:  # the same, capped at a smaller instruction set, after this run
        result[a.isa] = run_at_isa(a.isa)
        print(
            f"{'isa':8} {'ours img/s':>11} {'naive img/s':>12} {'ratio':>6} {'GFLOP/s':>8} "
            f"{'peak':>7}"
        )
        for r in (result, result[a.isa]):
            print(
                f"{r['isa']:8} {r['value']:11.1f} {r['baseline']:12.1f} {r['ratio']:6.2f} "
                f"{r['gflops']:8.1f} {r['matmul_peak_gflops']:7.1f}"
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
