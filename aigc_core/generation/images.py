"""Batched image sampling.

Latents are drawn for all n items up front from one seeded generator, so item i is the same
image whatever the batch size; batches then run through the generator in inference mode, in bf16
with channels-last convolutions where the device supports it (about 2x faster than contiguous
bf16 on an AVX-512 BF16 CPU). A generator that offers `for_inference(dtype)` (the DCGAN) runs
as that inference form: BatchNorm folded, weights stored in the compute dtype.

On the CPU, batches run on as many threads as torch has intra-op threads, each batch with one
intra-op thread: a core per batch instead of every core splitting each operator (8% more
images/s for the seed's generator on the project's 2-core CPU, benchmarks/generate_throughput.py;
the images are bitwise the same). Torch's thread count is process-wide, so it is lowered for the
duration of the call and restored after, and such calls take turns (a served model may get
concurrent requests). Freed batches stay in the process for the next ones
(`aigc_core.memory.keep_freed_memory`): without that, page faults on fresh memory took about 15%
of the time.

A class-conditional generator (`cfg.num_classes` > 0) takes labels (B,) int64 beside z: item i
gets labels[i] (`aigc_core.generation.labels`); its latents are drawn as an unconditional one's,
so the same (n, seed) gives the same z whatever the labels. An unconditional generator is called
as `net(z)`, as it always was (a plugin's module need not know of labels).

`ImageGenerator` wraps such a generator for everything that samples it (evaluation, content
batches, the served pyfunc model): `generate` and the pyfunc request/response `predict`.
"""

from __future__ import annotations

import base64
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from aigc_core.generation.labels import LabelsError, balanced, item_labels, parse_labels
from aigc_core.images import png_bytes, to_uint8
from aigc_core.memory import keep_freed_memory
from aigc_core.training.device import autocast, bf16_supported

MAX_IMAGES_PER_REQUEST = 10_000
_THREADS = threading.Lock()  # held while a call has lowered torch's thread count


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))  # (n, z)


def num_classes(module: torch.nn.Module) -> int:
    """The classes a generator module takes labels of (0: unconditional)."""
    return int(getattr(module.cfg, "num_classes", 0) or 0)


def check_labels(labels, n: int, classes: int) -> np.ndarray | None:
    """The per-item labels (n,) int64 that n images of a model with `classes` classes get:
    a conditional model given none spreads them over its classes in turn (`balanced`); labels
    given to an unconditional model, out of range, or not one per item raise `LabelsError`."""
    if labels is None:
        return balanced(n, classes) if classes else None
    if not classes:
        raise LabelsError(
            "labels asked of an unconditional model: train a conditional one (e.g. a "
            "*-conditional preset) or ask for no labels"
        )
    arr = np.asarray(labels)
    if arr.shape != (n,) or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise LabelsError(f"labels must be ({n},) integers, one per image, got {arr.shape}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= classes)]
    if bad.size:
        raise LabelsError(
            f"label {int(bad[0])} is out of range: the model knows classes 0..{classes - 1}"
        )
    return arr


def generate_images(
    generator: torch.nn.Module,
    n: int,
    seed: int,
    batch_size: int = 256,
    bf16: bool = True,
    on_batch=None,
    workers: int | None = None,
    labels=None,
) -> np.ndarray:
    """n images (n, C, H, W) float32 in [0, 1] from a generator that maps (B, z) -> [-1, 1]
    (and labels (B,) int64, for a conditional one: `labels` (n,), or None for its classes in
    turn; see `check_labels`). workers: batches run at once (CPU only; default: torch's
    intra-op thread count)."""
    inputs = batch_inputs(generator, n, seed, batch_size, labels)
    generator.eval()
    device = next(generator.parameters()).device
    use_bf16 = bf16 and bf16_supported(device)
    if hasattr(generator, "for_inference"):  # the DCGAN: folded weights in the compute dtype
        net, cast = generator.for_inference(torch.bfloat16 if use_bf16 else torch.float32), False
    else:
        net, cast = generator, use_bf16
        if use_bf16:
            generator.to(memory_format=torch.channels_last)  # conv weights only; idempotent

    def run(start: int) -> torch.Tensor:  # autocast and inference mode are per thread
        with torch.inference_mode(), autocast(device, cast):
            x = net(*inputs(start))  # (B, C, H, W); an unconditional module is called as net(z)
            return ((x.float() + 1) / 2).clamp_(0, 1).cpu().contiguous()

    return run_batches(run, n, batch_size, device, on_batch, workers)


def batch_inputs(
    generator: torch.nn.Module, n: int, seed: int, batch_size: int, labels
) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """`inputs(start)`: the arguments of a generator (B, z) [, labels (B,)] for its items
    start..start+batch_size-1 of n, on its device: (z,) of an unconditional generator, (z,
    labels) of a conditional one. Checks n, batch_size and the labels first (`check_labels`:
    None gives a conditional generator its classes in turn), then draws all n latents at once
    (`latents`), so item i gets the same z whatever the batch size. Image and audio generation
    share it."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    labels = check_labels(labels, n, num_classes(generator))
    y_all = None if labels is None else torch.from_numpy(labels)  # (n,)
    device = next(generator.parameters()).device
    z_all = latents(n, generator.cfg.z_dim, seed)

    def inputs(start: int) -> tuple[torch.Tensor, ...]:
        z = z_all[start : start + batch_size].to(device)  # (B, z)
        return (z,) if y_all is None else (z, y_all[start : start + batch_size].to(device))

    return inputs


def run_batches(
    run, n: int, batch_size: int, device: torch.device, on_batch=None, workers: int | None = None
) -> np.ndarray:
    """`run(start)` -> the images of items start..start+batch_size-1, for every batch of n
    items, concatenated. On the CPU, batches run at once on `workers` threads (default: torch's
    intra-op thread count) with one intra-op thread each (see the module's docstring);
    on_batch(done, n) after each batch, in order."""
    starts = range(0, n, batch_size)
    workers = workers or torch.get_num_threads()
    workers = min(workers, len(starts)) if device.type == "cpu" else 1
    if device.type == "cpu":
        keep_freed_memory()
    out = []
    with contextlib.ExitStack() as stack:
        if workers > 1:
            stack.enter_context(_THREADS)
            threads = torch.get_num_threads()  # another call may have finished meanwhile
            torch.set_num_threads(1)
            stack.callback(torch.set_num_threads, threads)
            batches = stack.enter_context(ThreadPoolExecutor(workers)).map(run, starts)
        else:
            batches = map(run, starts)
        for start, batch in zip(starts, batches, strict=True):
            out.append(batch)
            if on_batch is not None:
                on_batch(min(start + batch_size, n), n)
    return torch.cat(out).numpy()


class ModuleGenerator:
    """A generator module in eval mode, wrapped for everything that samples it: what the image
    and the audio generators share. A subclass gives `generate(n, seed, batch_size=...,
    on_batch=None, labels=None, **options)` (an (n, ...) array), `MAX_PER_REQUEST` (the most
    items one row of a served request may ask for) and `response_fields(items)` (each generated
    item's own response columns, its encoding). `predict` answers a served request with them
    (`served_requests`): one row per item, `request` (row of the request), `index` (within it),
    `seed`, `label` (the class asked for, -1 when none was), then the item's fields."""

    MAX_PER_REQUEST: ClassVar[int]

    def __init__(self, module: torch.nn.Module):
        self.generator = module.eval()

    @property
    def module(self) -> torch.nn.Module:
        return self.generator

    @property
    def num_classes(self) -> int:
        """The classes the model takes labels of (0: unconditional)."""
        return num_classes(self.module)

    def predict(
        self, request: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        rows = []
        for req, n, seed, asked, options in served_requests(
            request, params, self.num_classes, self.MAX_PER_REQUEST
        ):
            items = self.generate(n, seed, labels=asked, **options)
            for i, own in enumerate(self.response_fields(items)):
                label = -1 if asked is None else int(asked[i])
                rows.append({"request": req, "index": i, "seed": seed, "label": label, **own})
        return pd.DataFrame(rows)


class ImageGenerator(ModuleGenerator):
    """A generator module `(B, z) -> images in [-1, 1]` with `cfg.z_dim`, ready to sample; a
    conditional one (`cfg.num_classes` > 0) takes `(z, labels)`.

    Request (`predict`): a DataFrame with columns `n` (images wanted) and `seed`; one row per
    request. Params: `labels`, a spec (`aigc_core.generation.labels.parse_labels`: "7", "3,7",
    "3:0.7,7:0.3"; "" asks for none) whose pattern item i of every request gets (a request may
    also give it as a `labels` column); any other param is a generation option for `generate`
    (a subclass's, e.g. a diffusion model's guidance; this class has none). Response: one row
    per image: `request` (row of the request), `index` (within the request), `seed`, `label`
    (the class asked for, -1 when none was), `height`, `width`, `png_base64` (8-bit grayscale
    PNG).
    """

    MAX_PER_REQUEST = MAX_IMAGES_PER_REQUEST

    def generate(
        self, n: int, seed: int, batch_size: int = 256, on_batch=None, labels=None, **options
    ) -> np.ndarray:
        """n images (n, C, H, W) float32 in [0, 1]; the same (n, seed, labels) gives the same
        images. labels: None or (n,) int64, one per image (see `check_labels`). options: a
        subclass's generation options; this class takes none (ValueError naming them)."""
        refuse_options(options, "image")
        return generate_images(
            self.generator, n, seed, batch_size=batch_size, on_batch=on_batch, labels=labels
        )

    def response_fields(self, images: np.ndarray) -> Iterator[dict[str, Any]]:
        """The response columns of each generated image (N, C, H, W) in [0, 1]."""
        for img in to_uint8(images):
            yield {
                "height": img.shape[0],
                "width": img.shape[1],
                "png_base64": base64.b64encode(png_bytes(img)).decode("ascii"),
            }


def refuse_options(options: Mapping[str, Any], kind: str) -> None:
    """A ValueError naming the generation options given to a `kind` model that takes none."""
    if options:
        raise ValueError(
            f"unknown generation option(s) {', '.join(sorted(options))}: this {kind} model "
            "takes none"
        )


def served_requests(
    request: pd.DataFrame, params: Mapping[str, Any] | None, classes: int, max_n: int
) -> list[tuple[int, int, int, np.ndarray | None, dict[str, Any]]]:
    """The rows of a served request to a class-conditional (or unconditional) generator of
    images or clips, checked: (row index, n, seed, the (n,) classes asked or None, the
    generation options). `params` holds the request-wide options, `labels` among them (a
    row's own `labels` column wins for that row); n and seed are columns, never params."""
    options = dict(params or {})
    base = parse_labels(options.pop("labels", None), classes)
    columns = sorted(set(options) & {"n", "seed", "batch_size", "on_batch"})
    if columns:
        raise ValueError(
            f"{', '.join(columns)} cannot be a param: give n and seed as columns of the request"
        )
    has_labels = "labels" in request.columns
    rows = []
    for req, row in enumerate(request.to_dict("records")):
        n, seed = int(row["n"]), int(row["seed"])
        if not 1 <= n <= max_n:
            raise ValueError(f"n must lie in [1, {max_n}], got {n}")
        pattern = base
        if has_labels and not missing(row["labels"]):
            pattern = parse_labels(str(row["labels"]), classes)
        rows.append((req, n, seed, item_labels(pattern, 0, n), options))  # labels: (n,) or None
    return rows


def missing(value) -> bool:
    """A per-row option a request left out (None, NaN or an empty string)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    return isinstance(value, float) and np.isnan(value)
