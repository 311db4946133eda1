"""Benchmark: clips/s (and seconds of audio per second) of batched WaveGAN generation against a
one-clip-at-a-time loop, in the same run.

The model is a WaveGAN generator with seeded random weights (throughput does not depend on
them), by default the cpu preset's (d=16, kernel 9, 4096 samples at 8 kHz: 0.512 s a clip;
`--preset gpu` for the paper's d=64, kernel 25). The project's path is
`aigc_core.generation.audio.generate_clips`: inference mode, batches on one thread per core,
bf16 where the CPU has it. The baseline is one latent at a time through an fp32 copy of the same
generator. Batched and one-at-a-time runs alternate, `--repeats` times each, and the best of each
is kept (noise from other work only ever slows a run down); the ratio is of those bests. Ends
with one JSON line. Tiny by default: well under a minute on 2 cores.

usage: python benchmarks/generate_audio_throughput.py [--preset cpu] [--n 512]
       [--baseline-n 32] [--batch-size 64] [--repeats 3] [--threads T]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time

import torch
from common import headline, machine_load

from aigc_core.families.wavegan import PRESETS
from aigc_core.generation.audio import generate_clips
from aigc_core.models.wavegan import Generator
from aigc_core.training.device import bf16_supported

log = logging.getLogger("benchmarks.generate_audio_throughput")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--n", type=int, default=512, help="clips per batched run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--baseline-n", type=int, default=32, help="clips per one-at-a-time run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    cfg = PRESETS[a.preset][0]
    torch.manual_seed(0)
    g = Generator(cfg).eval()
    naive = copy.deepcopy(g)
    seconds_per_clip = cfg.length / cfg.sample_rate

    def one_at_a_time() -> None:
        z = torch.randn(a.baseline_n, cfg.z_dim, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            for i in range(a.baseline_n):
                naive(z[i : i + 1])

    def batched() -> None:
        generate_clips(g, a.n, seed=1, batch_size=a.batch_size)

    generate_clips(g, a.batch_size, seed=0, batch_size=a.batch_size)  # warm-up (oneDNN plans)
    one_at_a_time()
    best_one, best_batched = float("inf"), float("inf")
    for _ in range(a.repeats):  # interleaved: drifting load hits both alike
        best_one = min(best_one, timed(one_at_a_time))
        best_batched = min(best_batched, timed(batched))
    baseline, value = a.baseline_n / best_one, a.n / best_batched
    log.info("one at a time, fp32: %.1f clips/s", baseline)
    log.info("batched (bf16=%s): %.1f clips/s", bf16_supported(device), value)
    result = {
        **headline(f"generate_wavegan_{a.preset}_cpu", "clips/s", value, baseline),
        "audio_seconds_per_second": round(value * seconds_per_clip, 1),
        "baseline_audio_seconds_per_second": round(baseline * seconds_per_clip, 1),
        "clip_samples": cfg.length,
        "sample_rate": cfg.sample_rate,
        "bf16": bf16_supported(device),
        "batch_size": a.batch_size,
        "n": a.n,
        "repeats": a.repeats,
        **machine_load(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
