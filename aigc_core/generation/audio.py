"""Batched audio sampling and the audio pyfunc request/response.

As for images (`aigc_core.generation.images`, whose helpers this reuses): latents for all n
clips are drawn up front from one seeded generator, so clip i is the same whatever the batch
size; batches run in inference mode (bf16 where the device supports it), on the CPU a core per
batch. A conditional generator takes labels (B,) beside z; given none it makes its classes in
turn (`labels.balanced`).

`AudioGenerator` wraps a generator module `(B, z) -> (B, 1, L)` in [-1, 1] whose config has
`z_dim`, `length` and `sample_rate` (WaveGAN) for everything that samples it: evaluation,
content batches and the served model's `predict`, which returns 16-bit PCM WAV files as base64.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigc_core.audio import to_wav_bytes
from aigc_core.generation.images import (
    ModuleGenerator,
    batch_inputs,
    refuse_options,
    run_batches,
)
from aigc_core.models.io import config_fields, load_weights
from aigc_core.models.wavegan import Generator, WaveGANConfig
from aigc_core.training.device import autocast, bf16_supported

MAX_CLIPS_PER_REQUEST = 1_000  # a 16384-sample clip is 32 kB of WAV, 44 kB as base64


def generate_clips(
    generator: torch.nn.Module,
    n: int,
    seed: int,
    batch_size: int = 64,
    bf16: bool = True,
    on_batch=None,
    workers: int | None = None,
    labels=None,
) -> np.ndarray:
    """n clips (n, L) float32 in [-1, 1] from a generator (B, z) -> (B, 1, L) (and labels (B,)
    of a conditional one: `labels` (n,), or None for its classes in turn)."""
    inputs = batch_inputs(generator, n, seed, batch_size, labels)
    generator.eval()
    device = next(generator.parameters()).device
    use_bf16 = bf16 and bf16_supported(device)

    def run(start: int) -> torch.Tensor:  # autocast and inference mode are per thread
        with torch.inference_mode(), autocast(device, use_bf16):
            x = generator(*inputs(start))  # (B, 1, L)
            return x[:, 0].float().clamp_(-1, 1).cpu().contiguous()  # (B, L)

    return run_batches(run, n, batch_size, device, on_batch, workers)


class AudioGenerator(ModuleGenerator):
    """A waveform generator ready to sample.

    Request (`predict`): a DataFrame with columns `n` (clips wanted) and `seed`, one row per
    request, optionally `labels` (a spec, `aigc_core.generation.labels.parse_labels`); params:
    `labels` (a spec for every request). Response: one row per clip: `request`, `index`, `seed`,
    `label` (-1 when none was asked), `sample_rate`, `num_samples`, `wav_base64` (mono 16-bit
    PCM WAV).
    """

    MAX_PER_REQUEST = MAX_CLIPS_PER_REQUEST

    @property
    def sample_rate(self) -> int:
        return int(self.module.cfg.sample_rate)

    @property
    def length(self) -> int:
        return int(self.module.cfg.length)

    def generate(
        self, n: int, seed: int, batch_size: int = 64, on_batch=None, labels=None, **options
    ) -> np.ndarray:
        """n clips (n, L) float32 in [-1, 1]; the same (n, seed, labels) gives the same clips
        whatever the batch size."""
        refuse_options(options, "audio")
        return generate_clips(
            self.generator, n, seed, batch_size=batch_size, on_batch=on_batch, labels=labels
        )

    def response_fields(self, clips: np.ndarray) -> Iterator[dict[str, Any]]:
        """The response columns of each generated clip (N, L) in [-1, 1]."""
        for clip in clips:
            wav = to_wav_bytes(clip, self.sample_rate)
            yield {
                "sample_rate": self.sample_rate,
                "num_samples": len(clip),
                "wav_base64": base64.b64encode(wav).decode("ascii"),
            }


def load_generator(
    weights: Path, config: dict | WaveGANConfig, device: str | torch.device = "cpu"
) -> AudioGenerator:
    """A saved WaveGAN generator (safetensors weights, its config: a WaveGANConfig or the
    saved config dict, its "family" key allowed) as an AudioGenerator. The family's
    `load_generator(weights, config_path, device)` reads config.json and calls this."""
    if not isinstance(config, WaveGANConfig):
        config = WaveGANConfig(**config_fields(config))
    return AudioGenerator(load_weights(Generator(config), weights, device))
