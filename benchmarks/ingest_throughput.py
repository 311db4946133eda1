"""Benchmark: ingest rows/s and peak memory against a naive row-by-row pandas baseline, same run.

Data (generated, seeded, written to a temp folder first): 70,000 28x28 uint8 images with labels
as MNIST-format IDX files (raw, train 60,000 + t10k 10,000), and ~10 MB of English-like text as a
.txt file (one document per paragraph; a few e-mail addresses, phone numbers, accented words and
repeated paragraphs, so cleaning has work to do).

The project's path is what `aigc ingest --path` runs, without the data contract:
`aigc_core.data.ingest.prepare` (read, preprocess, Arrow table) and `publish` (Parquet parts,
manifest, atomic rename) into a temp datasets folder. The baseline does the same job row by row:
one dict per image (`tolist()` pixels, per-row sha256 and split) or per document (the same
cleaning regexes applied to every document, per-row sha256, dedupe with a set), then
`pandas.DataFrame(rows).to_parquet` and a manifest with the file's sha256; it runs on a prefix of
the data and is reported in rows/s.

Every measurement runs in a fresh subprocess. Peak memory is ru_maxrss minus the RSS after the
imports and a warm-up ingest of a few rows (the one-time cost of loading Arrow's kernels, the
same for both sides), compared with the raw data size (70,000 * 784 bytes; the text's UTF-8
bytes). Targets (issue 3): >= 10x the baseline's rows/s, peak memory < 3x the raw data size.
Ends with one JSON line (DESIGN.md section 5).

usage: python benchmarks/ingest_throughput.py [--images 70000] [--text-mb 10] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.ingest_throughput")
TARGET_RATIO = 10.0
TARGET_MEMORY = 3.0  # peak memory over raw data size
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049

WORDS = (  # the vocabulary of the generated text
    "the of and to in is that for it as with was on be by this are from or at an which model "
    "data image text training pipeline snapshot sample value layer network function result "
    "system process method set number time first new used two use may can also will each one "
    "between through during without within against café naïve déjà résumé über façade"
)


# --------------------------------------------------------------------------- data


def idx_bytes(values: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">i{values.ndim}i", magic, *values.shape) + values.tobytes()


def make_images(folder: Path, n: int, seed: int = 0) -> int:
    """n MNIST-like uint8 images (a few bright strokes on black) as raw IDX pairs; returns bytes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    x = np.empty((n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    for start in range(0, n, 5000):
        m = min(5000, n - start)
        img = np.zeros((m, 28, 28), dtype=np.float32)
        for _ in range(3):  # three Gaussian blobs per image
            cy, cx = rng.uniform(6, 22, size=(2, m, 1, 1)).astype(np.float32)
            s = rng.uniform(1.5, 4.0, size=(m, 1, 1)).astype(np.float32)
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        img = np.clip(img * 255, 0, 255)
        img[img < 20] = 0  # black background, as in MNIST
        x[start : start + m] = img.astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    split = n * 6 // 7
    for prefix, sl in (("train", slice(0, split)), ("t10k", slice(split, n))):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(x[sl], IMAGES_MAGIC))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels[sl], LABELS_MAGIC))
    return x.nbytes


def make_text(path: Path, megabytes: float, seed: int = 0) -> int:
    """Paragraphs of random words, ~megabytes of UTF-8; returns the file's size in bytes."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS.split(), dtype=object)
    paragraphs: list[str] = []
    size, target = 0, int(megabytes * 1_000_000)
    while size < target:
        k = int(rng.integers(20, 120))
        ws = list(words[rng.integers(0, len(words), size=k)])
        roll = rng.random()
        if roll < 0.05:
            ws.insert(k // 2, f"user{int(rng.integers(1e6))}@example.org")
        elif roll < 0.10:
            ws.insert(k // 3, f"555-{int(rng.integers(100, 999))}-{int(rng.integers(1000, 9999))}")
        if paragraphs and roll > 0.98:  # an exact repeat, removed by dedupe
            p = paragraphs[int(rng.integers(len(paragraphs)))]
        else:
            p = " ".join(ws).capitalize() + "."
        paragraphs.append(p)
        size += len(p.encode()) + 2
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path.stat().st_size


# --------------------------------------------------------------------------- the two sides


def project(kind: str, src: Path, out: Path, warm_src: Path) -> dict:
    from aigc_core.data.ingest import prepare, publish

    def ingest(name: str, path: Path, root: Path):
        return publish(prepare(name, path=path, kind=kind), root, gate=None)

    ingest("warm-up", warm_src, out / "warm-up")
    base = rss_bytes()
    t0 = time.perf_counter()
    snap = ingest(f"bench-{kind}", src, out / "datasets")
    seconds = time.perf_counter() - t0
    return {"rows": snap.manifest["num_rows"], "seconds": seconds, "base_rss": base}


def baseline(kind: str, src: Path, out: Path, warm_src: Path, limit: int) -> dict:
    import hashlib
    import unicodedata

    import pandas as pd

    from aigc_core.data.text import CONTROL, EMAIL, PHONE

    def split(row_id: str) -> str:
        return "validation" if int(row_id[:8], 16) / 0xFFFFFFFF < 0.2 else "train"

    def image_rows(folder: Path, n: int) -> list[dict]:
        rows = []
        for prefix in ("train", "t10k"):
            with open(folder / f"{prefix}-images-idx3-ubyte", "rb") as f:
                _, count, h, w = struct.unpack(">iiii", f.read(16))
                take = min(count, n - len(rows))
                x = np.frombuffer(f.read(take * h * w), dtype=np.uint8).reshape(take, h, w)
            with open(folder / f"{prefix}-labels-idx1-ubyte", "rb") as f:
                y = np.frombuffer(f.read(8 + take), dtype=np.uint8)[8:]
            for i in range(take):
                img = x[i]
                row_id = hashlib.sha256(img.tobytes()).hexdigest()[:24]
                rows.append(
                    {
                        "id": row_id,
                        "split": split(row_id),
                        "label": int(y[i]),
                        "height": h,
                        "width": w,
                        "channels": 1,
                        "pixels": img.ravel().tolist(),
                    }
                )
        return rows

    def text_rows(path: Path, n: int) -> list[dict]:
        rows, seen, para = [], set(), []

        def add(doc: str) -> None:
            text = unicodedata.normalize("NFC", doc).replace("\r\n", "\n")
            text = PHONE.sub("<phone>", EMAIL.sub("<email>", CONTROL.sub("", text))).strip()
            if text and text not in seen:
                seen.add(text)
                row_id = hashlib.sha256(text.encode()).hexdigest()[:24]
                rows.append({"id": row_id, "split": split(row_id), "text": text})

        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    para.append(line.rstrip("\n"))
                elif para:
                    add("\n".join(para))
                    para = []
                if len(rows) >= n:
                    return rows
        if para:
            add("\n".join(para))
        return rows

    def ingest(path: Path, root: Path, n: int) -> int:
        rows = image_rows(path, n) if kind == "image" else text_rows(path, n)
        root.mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(root / "part-0.parquet", compression="zstd")
        digest = hashlib.sha256((root / "part-0.parquet").read_bytes()).hexdigest()
        manifest = {"rows": len(rows), "files": [{"path": "part-0.parquet", "sha256": digest}]}
        (root / "manifest.json").write_text(json.dumps(manifest))
        return len(rows)

    ingest(warm_src, out / "warm-up", 16)
    base = rss_bytes()
    t0 = time.perf_counter()
    rows = ingest(src, out / "datasets", limit)
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds, "base_rss": base}


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(args: list[str]) -> None:
    """Run one side once in this (fresh) process; print its figures as JSON."""
    side, kind, src, out, warm_src, limit = args
    if side == "project":
        result = project(kind, Path(src), Path(out), Path(warm_src))
    else:
        result = baseline(kind, Path(src), Path(out), Path(warm_src), int(limit))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    result["peak_over_base"] = peak - result["base_rss"]
    print(json.dumps(result))


def measure(side: str, kind: str, src: Path, tmp: Path, warm: Path, limit: int, repeats: int):
    """Best rows/s over `repeats` fresh processes, and the highest peak memory among them."""
    runs = []
    for r in range(repeats):
        out = tmp / f"{side}-{kind}-{r}"
        cmd = [sys.executable, __file__, "--child", side, kind, str(src), str(out), str(warm)]
        p = subprocess.run([*cmd, str(limit)], capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise SystemExit(f"{side} {kind} failed:\n{p.stderr}")
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    best = max(runs, key=lambda x: x["rows"] / x["seconds"])
    peak = max(x["peak_over_base"] for x in runs)
    log.info(
        "%-8s %-5s %6d rows in %.2f s: %8.0f rows/s, peak %.1f MB over imports",
        side, kind, best["rows"], best["seconds"], best["rows"] / best["seconds"], peak / 1e6,
    )  # fmt: skip
    return best["rows"] / best["seconds"], peak, best["rows"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=70_000)
    p.add_argument("--text-mb", type=float, default=10.0)
    p.add_argument("--baseline-images", type=int, default=7_000, help="prefix the baseline runs")
    p.add_argument("--baseline-docs", type=int, default=5_000, help="prefix the baseline runs")
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per measurement")
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="aigc-bench-ingest-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        image_bytes = make_images(tmp / "idx", a.images)
        make_images(tmp / "idx-warm", 16, seed=1)
        text_bytes = make_text(tmp / "docs.txt", a.text_mb)
        make_text(tmp / "warm.txt", 0.002, seed=1)
        log.info(
            "generated %d images (%.1f MB) and %.1f MB of text in %.1f s",
            a.images, image_bytes / 1e6, text_bytes / 1e6, time.perf_counter() - t0,
        )  # fmt: skip
        figures = {}
        for kind, src, warm, limit in (
            ("image", tmp / "idx", tmp / "idx-warm", a.baseline_images),
            ("text", tmp / "docs.txt", tmp / "warm.txt", a.baseline_docs),
        ):
            figures[kind] = {
                "project": measure("project", kind, src, tmp, warm, 0, a.repeats),
                "baseline": measure("baseline", kind, src, tmp, warm, limit, a.repeats),
            }
    raw = {"image": image_bytes, "text": text_bytes}
    out: dict = {"benchmark": "ingest", "unit": "rows/s"}
    extra: dict = {}
    for kind in ("image", "text"):
        rate, peak, rows = figures[kind]["project"]
        b_rate, b_peak, b_rows = figures[kind]["baseline"]
        extra.update(
            {
                f"{kind}_rows": rows,
                f"{kind}_rows_per_s": round(rate, 1),
                f"{kind}_baseline_rows": b_rows,
                f"{kind}_baseline_rows_per_s": round(b_rate, 1),
                f"{kind}_ratio": round(rate / b_rate, 2),
                f"{kind}_raw_mb": round(raw[kind] / 1e6, 2),
                f"{kind}_peak_mb": round(peak / 1e6, 1),
                f"{kind}_peak_over_raw": round(peak / raw[kind], 2),
                f"{kind}_baseline_peak_mb": round(b_peak / 1e6, 1),
                f"{kind}_baseline_peak_over_its_raw": round(b_peak / raw[kind] * rows / b_rows, 2),
            }
        )
    image_rate, _, _ = figures["image"]["project"]
    image_base, _, _ = figures["image"]["baseline"]
    out.update(
        {
            "value": round(image_rate, 1),
            "baseline": round(image_base, 1),
            "ratio": round(image_rate / image_base, 2),
            **extra,
            "target_ratio": TARGET_RATIO,
            "target_peak_over_raw": TARGET_MEMORY,
            "meets_target": all(
                extra[f"{k}_ratio"] >= TARGET_RATIO and extra[f"{k}_peak_over_raw"] < TARGET_MEMORY
                for k in ("image", "text")
            ),
            "cpus": os.cpu_count(),
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
