"""Benchmark: characters/s of batched text generation with the models' incremental decoders
against the model run on its whole cropped context for every character, same run (issue 17).

Per family (charlstm, transformer): the model at its `cpu` preset's size (`--block-size`
overrides the context) with seeded random weights (throughput does not depend on the weights:
no stop strings, so every row runs to the end) and the vocabulary of Python's documentation
topics (`pydoc_data`). Rows: `--rows` prompts of 4 characters, slices of that text, sampled at
temperature 1 through `TextGenerator.generate`: `cache=True` (the project's path: the
Transformer's key/value cache, the LSTM's carried state) against `cache=False` (the model on the
last block_size characters at every step). Two lengths: `--new-chars` (default 200, the CLI's
default) and the most that fits in the context after the prompt (block_size - 4). Past the
context both paths run the whole window for every character: the output is that of the cropped
context, which learned positions and a reset LSTM state cannot slide incrementally.

Best of `--repeats` runs, the two paths interleaved (the cores are shared: noise only ever slows
a run down). Target: the Transformer's cached decoder >= 5x the baseline at `--new-chars`.
Ends with one JSON line (DESIGN.md section 5).

usage: python benchmarks/generate_text_throughput.py [--rows 64] [--new-chars 200] [--repeats 2]
       [--block-size N] [--families charlstm transformer] [--threads T] [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pydoc_data.topics import topics

import torch
from common import machine_load, sync

from aigc_core import families
from aigc_core.generation.text import TextGenerator
from aigc_core.models.charlstm import CharLSTM
from aigc_core.models.chars import build_vocab
from aigc_core.models.transformer import TransformerLM
from aigc_core.training import lm
from aigc_core.training.device import pick_device

TARGET = 5.0  # cached / uncached characters/s of the Transformer at 200 new characters
MODULES = {"charlstm": CharLSTM, "transformer": TransformerLM}
PROMPT_CHARS = 4


def generator(family: str, vocab: str, block_size: int, device: torch.device) -> TextGenerator:
    cfg = lm.with_vocab(families.get(family).preset("cpu").model, vocab)
    if block_size:
        cfg = dataclasses.replace(cfg, block_size=block_size)
    torch.manual_seed(0)
    return TextGenerator(MODULES[family](cfg).to(device))


def best_seconds(
    gen: TextGenerator, prompts: list[str], n: int, cache: bool, best: float, device: torch.device
) -> float:
    """The faster of `best` and the seconds of one run of `n` new characters per prompt."""
    t0 = time.perf_counter()
    gen.generate(prompts, n, seed=1, cache=cache, batch_size=len(prompts))
    sync(device)
    return min(best, time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=64, help="prompts generated as one batch")
    p.add_argument("--new-chars", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--block-size", type=int, default=0, help="context (0: the cpu preset's)")
    p.add_argument("--families", nargs="+", default=list(MODULES), choices=list(MODULES))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (the issue's target), cuda, or auto")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    text = "".join(topics.values())
    vocab = build_vocab(text)
    step = len(text) // a.rows
    prompts = [text[i * step : i * step + PROMPT_CHARS] for i in range(a.rows)]

    results: dict[str, dict] = {}
    print(
        f"{'family':<12}{'context':>8}{'new chars':>10}{'cached':>10}{'uncached':>10}{'ratio':>7}"
    )
    for family in a.families:
        gen = generator(family, vocab, a.block_size, device)
        block = gen.model.cfg.block_size
        lengths = {"new_chars": a.new_chars, "in_context": block - PROMPT_CHARS}
        for cache in (True, False):  # warm-up (kernel plans for each shape)
            gen.generate(prompts[:2], 8, seed=0, cache=cache)
        seconds = {(k, c): float("inf") for k in lengths for c in (True, False)}
        for _ in range(a.repeats):
            for k, n in lengths.items():
                for cache in (False, True):
                    seconds[k, cache] = best_seconds(
                        gen, prompts, n, cache, seconds[k, cache], device
                    )
        row: dict[str, float | int] = {"block_size": block}
        for k, n in lengths.items():
            cached, uncached = (a.rows * n / seconds[k, c] for c in (True, False))
            row |= {f"{k}_cached": round(cached, 1), f"{k}_uncached": round(uncached, 1)}
            row[f"{k}_ratio"] = ratio = round(cached / uncached, 2)
            print(f"{family:<12}{block:>8}{n:>10}{cached:>10.1f}{uncached:>10.1f}{ratio:>7}")
        results[family] = row

    main_family = "transformer" if "transformer" in results else a.families[0]
    head = results[main_family]
    print(
        json.dumps(
            {
                "benchmark": f"generate_text_{device.type}",
                "unit": "chars/s",
                "value": head["new_chars_cached"],
                "baseline": head["new_chars_uncached"],
                "ratio": head["new_chars_ratio"],
                "family": main_family,
                "target": TARGET,
                "meets_target": head["new_chars_ratio"] >= TARGET,
                "families": results,
                "rows": a.rows,
                "new_chars": a.new_chars,
                "repeats": a.repeats,
                "weights": "random (seeded)",
                "device": str(device),
                **machine_load(),  # threads, cpus, load: other work competing for the CPU
            }
        )
    )


if __name__ == "__main__":
    main()
