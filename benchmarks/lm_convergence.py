"""Benchmark: do the language models learn English in five minutes on this CPU? (issue 4)

Builds 1 MB of English from what every Python ships: the documentation topics in `pydoc_data`
(the built-in `python-docs` dataset), then the docstrings of the standard library's modules,
classes and functions, in sorted file order, keeping paragraphs of prose (no doctests, at least
85% letters and spaces) until 1,000,000 UTF-8 bytes; writes it as a .txt
file (one document per paragraph) and ingests it as `aigc ingest --path` does
(`aigc_core.data.ingest.prepare`: cleaning, dedupe, the train/validation split by content hash).
Then trains each language model at its `cpu` preset with the product's trainer
(`aigc_core.training.engine.train_model`, checkpoints in a temp folder), recording wall time and
the validation loss (nats per character, fixed held-out windows) at every log step.

Target: validation loss < 2.0 nats/char within 300 s for charlstm and transformer.
Ends with one JSON line (DESIGN.md section 5).

usage: python benchmarks/lm_convergence.py [--families charlstm transformer] [--mb 1.0]
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from aigc_core import families
from aigc_core.data.ingest import prepare
from aigc_core.data.snapshot import text_split
from aigc_core.training import engine
from aigc_core.training.engine import TrainData

log = logging.getLogger("benchmarks.lm_convergence")
TARGET_NATS, BUDGET_S = 2.0, 300.0


def stdlib_docstrings():
    """Docstrings of the standard library (modules, classes, functions), in sorted file order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in rel:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(
                node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ) and (doc := ast.get_docstring(node)):
                yield doc


def is_prose(para: str) -> bool:
    """Mostly words: no doctest prompts, at least 85% letters and spaces."""
    if ">>>" in para or "..." in para.split("\n", 1)[0][:4]:
        return False
    return sum(c.isalpha() or c.isspace() for c in para) >= 0.85 * len(para)


def english_corpus(n_bytes: int) -> str:
    """n_bytes (about) of English prose: pydoc topics, then stdlib docstrings."""
    from pydoc_data.topics import topics

    parts, size = [], 0
    for doc in (*(topics[k] for k in sorted(topics)), *stdlib_docstrings()):
        for para in doc.split("\n\n"):
            para = para.strip()
            if len(para) < 40 or not is_prose(para):
                continue
            parts.append(para)
            size += len(para.encode()) + 2
            if size >= n_bytes:
                return "\n\n".join(parts)
    return "\n\n".join(parts)


def train_family(family: str, data: TrainData, work: Path) -> dict:
    curve: list[tuple[float, int, float]] = []  # (seconds, step, val nats)
    t0 = time.perf_counter()

    def on_log(step: int, m: dict) -> None:
        if "val_loss" in m:
            curve.append((time.perf_counter() - t0, step, m["val_loss"]))
            t, v = curve[-1][0], m["val_loss"]
            log.info("%s step %d at %.0f s: val %.3f nats", family, step, t, v)

    engine.train_model(
        families.get(family), "cpu", data, torch.device("cpu"), work / family, on_log=on_log
    )
    wall = time.perf_counter() - t0
    first = next(((s, st) for s, st, v in curve if v < TARGET_NATS), None)
    final = curve[-1][2]
    return {
        f"{family}_val_nats": round(final, 3),
        f"{family}_val_bpc": round(final / 0.6931471805599453, 3),
        f"{family}_wall_s": round(wall, 1),
        f"{family}_steps": curve[-1][1],
        f"{family}_first_below_target_s": round(first[0], 1) if first else None,
        f"{family}_meets_target": final < TARGET_NATS and wall <= BUDGET_S,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=families.family_names("text"))
    p.add_argument("--mb", type=float, default=1.0, help="megabytes of English (10^6 bytes)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "english.txt"
        corpus.write_text(english_corpus(int(a.mb * 1e6)), encoding="utf-8")
        table = prepare("english", path=corpus).table
        train = "\n\n".join(text_split(table, "train"))
        val = "\n\n".join(text_split(table, "validation"))
        log.info(
            "corpus %d bytes: %d train / %d validation characters",
            corpus.stat().st_size,
            len(train),
            len(val),
        )
        result = {
            "benchmark": "lm_convergence_cpu",
            "unit": "nats/char",
            "target_nats": TARGET_NATS,
            "budget_s": BUDGET_S,
            "corpus_bytes": corpus.stat().st_size,
            "train_chars": len(train),
            "val_chars": len(val),
            "threads": torch.get_num_threads(),
        }
        for family in a.families:
            result |= train_family(family, TrainData(text=train, val_text=val), work)
        result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
