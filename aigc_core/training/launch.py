"""Run one training job from the command line, alone or under torchrun (DDP).

    python -m aigc_core.training.launch --family charlstm --preset cpu \
        --text-file corpus.txt --out runs/x [--resume] [--set steps=500] [--init-from DIR]
    torchrun --nproc-per-node 2 -m aigc_core.training.launch --family transformer ...

Images come from a .npy file of (N, C, H, W) floats in [0, 1]; audio from a .npy file of (N, L)
int16 PCM clips with `--sample-rate` (Hz), e.g. a snapshot's `data.audio.audio_data(...).pcm`,
for `--family wavegan`. Checkpoints go to OUT/checkpoints,
the served model to OUT/model (weights.safetensors + config.json), and rank 0 prints one JSON
line with the metrics of the last log. Exit codes: see aigc_core.training.interrupt (0 done,
75 stopped by SIGTERM or SIGINT: after a checkpoint, or before training with nothing written;
3 non-finite loss). No Prefect, no MLflow: the `aigc train` command is the tracked path; this
is the engine's own entry point.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from aigc_core import families
from aigc_core.models.io import save_model
from aigc_core.training import ddp, engine, interrupt
from aigc_core.training.device import pick_device
from aigc_core.training.loop import Interrupted, NonFiniteLoss

log = logging.getLogger("aigc_core.training.launch")


def parse_overrides(family: str, preset: str, pairs: list[str]) -> dict:
    """--set key=value pairs, typed by the preset's train config fields."""
    _, train_cfg = families.get(family).preset(preset)
    types = {f.name: type(getattr(train_cfg, f.name)) for f in dataclasses.fields(train_cfg)}
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE with KEY in {sorted(types)}")
        t = types[key]
        out[key] = raw.lower() in ("1", "true", "yes") if t is bool else t(raw)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m aigc_core.training.launch")
    p.add_argument("--family", required=True, choices=families.family_names())
    p.add_argument("--preset", default="smoke")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--text-file", type=Path)
    p.add_argument("--images-npy", type=Path)
    p.add_argument("--audio-npy", type=Path, help="(N, L) int16 PCM clips")
    p.add_argument("--sample-rate", type=int, default=0, help="Hz of --audio-npy's clips")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--init-from", type=Path, help="a saved model directory to warm-start from")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args(argv)
    if a.audio_npy and a.sample_rate < 1:
        p.error("--audio-npy needs --sample-rate (the clips' rate in Hz)")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with interrupt.stop_on_signals():  # before the slow start-up: no signal is lost
        return _run(a)


def _run(a: argparse.Namespace) -> int:
    if a.threads:
        torch.set_num_threads(a.threads)
    device = ddp.setup(pick_device(a.device))
    data = engine.TrainData()
    if a.text_file:
        data.text = a.text_file.read_text(encoding="utf-8")
    if a.images_npy:
        data.images = torch.from_numpy(np.load(a.images_npy)).float()
    if a.audio_npy:
        pcm = np.load(a.audio_npy)
        if pcm.ndim != 2 or pcm.dtype != np.int16:
            raise SystemExit(
                f"--audio-npy {a.audio_npy}: expected (N, L) int16 PCM, got {pcm.shape} {pcm.dtype}"
            )
        data.audio, data.sample_rate = torch.from_numpy(pcm)[:, None], a.sample_rate
    code = 0
    try:
        if ddp.any_rank(interrupt.stop_requested()):  # a signal during start-up
            raise Interrupted.before_start()
        result = engine.train_model(
            families.get(a.family),
            a.preset,
            data,
            device,
            a.out / "checkpoints",
            resume=a.resume,
            init_from=a.init_from,
            overrides=parse_overrides(a.family, a.preset, a.set),
            stop=interrupt.stop_requested,
        )
        if ddp.is_main():
            module, config = result.served_module()
            save_model(a.out / "model", module, config)
            (a.out / "history.json").write_text(json.dumps(result.history))
            last = result.history[-1] if result.history else {}
            summary = {
                "family": a.family,
                "start_step": result.start_step,
                "world_size": ddp.world_size(),
                **last,
            }
            print(json.dumps(summary))
    except Interrupted as e:
        log.warning("%s; rerun with --resume to continue", e)
        code = interrupt.EXIT_INTERRUPTED
    except NonFiniteLoss as e:
        log.error("%s", e)
        code = interrupt.EXIT_NONFINITE
    finally:
        ddp.teardown()
    return code


if __name__ == "__main__":
    sys.exit(main())
