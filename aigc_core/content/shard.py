"""One shard of a content batch: generate its items, score each, write one Parquet part.

A shard's items depend only on the plan (model version, the shard's seed, sampling options, the
classes asked and the generation options), so it can run on any worker and be redone after a
crash. Its part is written atomically under the
batch's working folder; a rerun skips the shards whose part is there and readable.

What a shard generates and scores depends on the batch's kind: images (`image_shard`, each asked
for the class the plan's label pattern gives its index, scored by the snapshot's evaluator and
against the training images), texts (`text_shard`, each from its
own seed, scored per item under the generating model and against the training text's n-grams)
or audio clips (`audio_shard`, asked for classes as images are, written as 16-bit PCM WAV files
and scored as a whole shard: level faults, the snapshot's audio evaluator, a mel fingerprint
and the nearest training clip, `curation.audio.score_audio`).
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from aigc_core import progress
from aigc_core.atomic import write_bytes_atomic
from aigc_core.audio import to_pcm16, to_wav_bytes
from aigc_core.content.cache import cached
from aigc_core.content.plan import BatchPlan, audio_evaluator
from aigc_core.content.schema import (
    AUDIO_SHARD_SCHEMA,
    IMAGE_SHARD_SCHEMA,
    text_score_columns,
    text_shard_schema,
)
from aigc_core.curation.audio import mel_vectors, score_audio
from aigc_core.curation.images import score_images
from aigc_core.curation.policy import TextPolicy
from aigc_core.curation.text import TrainingNgrams, score_texts
from aigc_core.data.snapshot import (
    find_snapshot,
    image_arrays,
    pcm_values,
    read_table,
    text_split,
)
from aigc_core.evaluation.evaluator import load_or_train_evaluator
from aigc_core.generation.labels import item_labels
from aigc_core.generation.shards import Shard, part_name, shard_seed
from aigc_core.images import png_bytes, to_uint8
from aigc_core.paths import Home

log = logging.getLogger(__name__)

_done: dict[str, int] = {}  # items generated per batch in this process, for progress
_done_lock = threading.Lock()


@dataclass(frozen=True)
class ShardResult:
    """What a shard reports: its part file, its rows, and whether it was skipped (written by
    an earlier run, or the batch already published)."""

    shard: int
    path: str
    rows: int
    skipped: bool


def write_part(path: Path, table: pa.Table) -> None:
    """Write one Parquet part atomically (temporary name, fsync, rename)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(path, buf.getvalue())


def part_ok(path: Path, rows: int) -> bool:
    """Whether the part at `path` is readable Parquet with `rows` rows."""
    try:
        return pq.read_metadata(path).num_rows == rows
    except (OSError, pa.ArrowException):
        return False


def _training_table(home: Home, snapshot_id: str) -> pa.Table:
    table = read_table(find_snapshot(home.datasets, snapshot_id))
    return table.filter(pc.equal(table.column("split"), "train"))


def image_shard(plan: BatchPlan, s: Shard, home: Home, generator) -> pa.Table:
    """Images of one shard (drawn from the shard's seed; item i asked for class
    `plan.item_label(i)` when the plan names classes), scored by the evaluator and against the
    training images."""
    evaluator = cached(
        ("evaluator", str(home.root), plan.snapshot_id),
        lambda: load_or_train_evaluator(home, plan.snapshot_id)[0],
    )

    def training_images():
        train = _training_table(home, plan.snapshot_id)
        return image_arrays(train)[0], train.column("id").to_pylist()

    train, train_ids = cached(("train", str(home.root), plan.snapshot_id), training_images)
    labels = item_labels(plan.labels, s.start, s.stop)  # (count,) int64, or None
    # labels and options only when asked: a generator of the older protocol takes neither
    asked = {"labels": labels} if labels is not None else {}
    images = generator.generate(s.count, s.seed, **asked, **(plan.options or {}))
    images = to_uint8(images)  # (count, H, W) uint8
    _, probs = evaluator.embed(torch.from_numpy(images.astype(np.float32)[:, None] / 255.0))
    scores = score_images(images, probs, train)
    idx = np.arange(s.start, s.stop)
    nulls = pa.nulls(len(idx), pa.int16())
    return pa.table(
        {
            "id": [f"{plan.batch_id}-{i:07d}" for i in idx],
            "index": pa.array(idx, pa.int32()),
            "shard": pa.array(np.full(len(idx), s.index), pa.int32()),
            "seed": pa.array(np.full(len(idx), s.seed), pa.int64()),
            "png": [png_bytes(img) for img in images],
            "requested_label": pa.array(labels, pa.int16()) if labels is not None else nulls,
            "predicted_label": pa.array(scores["predicted_label"], pa.int16()),
            "confidence": pa.array(scores["confidence"], pa.float32()),
            "phash": pa.array(scores["phash"], pa.int64()),
            "train_distance": pa.array(scores["train_distance"], pa.float32()),
            "nearest_train_id": [train_ids[i] for i in scores["nearest_train"]],
        },
        schema=IMAGE_SHARD_SCHEMA,
    )


def text_shard(plan: BatchPlan, s: Shard, home: Home, generator) -> pa.Table:
    """Texts of one shard, each from its own seed, scored per item: length, perplexity under
    the model, repetition, blocklist, PII and n-gram overlap with the training text."""
    policy = TextPolicy(**plan.policy["text"])
    training = cached(
        ("train-ngrams", str(home.root), plan.snapshot_id, policy.train_ngram),
        lambda: TrainingNgrams(
            text_split(_training_table(home, plan.snapshot_id)), policy.train_ngram
        ),
    )
    idx = list(range(s.start, s.stop))
    prompts = [plan.item_prompt(i) for i in idx]
    seeds = [shard_seed(s.seed, j) for j in range(s.count)]
    sampling = plan.sampling or {}
    generated = generator.generate(
        prompts,
        sampling["max_new_tokens"],
        seeds,
        temperature=sampling["temperature"],
        top_k=sampling["top_k"],
        top_p=sampling["top_p"],
        stop=sampling["stop"],
    )
    texts = [t for t, _ in generated]
    perplexities = np.exp(np.asarray(generator.score(prompts, texts), dtype=np.float64))
    scores = score_texts(texts, policy, perplexities, training)
    schema = text_shard_schema(policy)
    columns = {
        "id": [f"{plan.batch_id}-{i:07d}" for i in idx],
        "index": idx,
        "shard": [s.index] * len(idx),
        "seed": seeds,
        "prompt": prompts,
        "text": texts,
        "finish_reason": [r for _, r in generated],
        **{c: scores[c].to_numpy() for c in text_score_columns(policy)},
    }
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)


def wav_files(clips: np.ndarray, sample_rate: int) -> pa.Array:
    """Clips (N, L) of floats in [-1, 1] as N mono 16-bit PCM WAV files, without a loop over
    clips: clips of one length and rate share their header, so the first clip's file
    (`audio.to_wav_bytes`) gives the header and every file is that header and its clip's
    little-endian PCM (`audio.to_pcm16`, as `to_wav_bytes` writes it)."""
    n, length = clips.shape
    pcm = np.ascontiguousarray(to_pcm16(clips), dtype="<i2").view(np.uint8)  # (N, 2L)
    first = to_wav_bytes(clips[0], sample_rate)
    header = first[: len(first) - 2 * length]
    if first[len(header) :] != pcm[0].tobytes():  # soundfile wrote a trailer or another layout
        raise RuntimeError("a WAV file's layout is not header + PCM: cannot batch WAV writing")
    files = np.empty((n, len(header) + 2 * length), dtype=np.uint8)
    files[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
    files[:, len(header) :] = pcm
    size = files.shape[1]
    offsets = np.arange(0, (n + 1) * size, size, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(files.reshape(-1))]
    )


def audio_shard(plan: BatchPlan, s: Shard, home: Home, generator) -> pa.Table:
    """Clips of one shard (drawn from the shard's seed; item i asked for class
    `plan.item_label(i)` when the plan names classes) as WAV files, scored as one batch: level
    faults, the snapshot's audio evaluator, a mel fingerprint and the nearest training clip."""
    evaluator = audio_evaluator(home, plan.snapshot_id)
    rate = int(evaluator.cfg.sample_rate)

    def training_vectors():
        train = _training_table(home, plan.snapshot_id)
        return mel_vectors(pcm_values(train.column("pcm")), rate), train.column("id").to_pylist()

    train_vectors, train_ids = cached(
        ("audio-train", str(home.root), plan.snapshot_id), training_vectors
    )
    labels = item_labels(plan.labels, s.start, s.stop)  # (count,) int64, or None
    asked = {"labels": labels} if labels is not None else {}
    clips = generator.generate(s.count, s.seed, **asked, **(plan.options or {}))  # (count, L)
    _, probs = evaluator.embed(clips)
    scores = score_audio(clips, probs, rate, train_vectors)
    idx = np.arange(s.start, s.stop)
    nulls = pa.nulls(len(idx), pa.int16())
    nearest = np.asarray(train_ids, dtype=object)[scores["nearest_train"].to_numpy()]
    f32 = {
        c: pa.array(scores[c].to_numpy(), pa.float32())
        for c in ("confidence", "peak", "silence_fraction", "clipping_fraction", "dc_offset")
    }
    return pa.table(
        {
            "id": [f"{plan.batch_id}-{i:07d}" for i in idx],
            "index": pa.array(idx, pa.int32()),
            "shard": pa.array(np.full(len(idx), s.index), pa.int32()),
            "seed": pa.array(np.full(len(idx), s.seed), pa.int64()),
            "wav": wav_files(clips, rate),
            "sample_rate": pa.array(np.full(len(idx), rate), pa.int32()),
            "requested_label": pa.array(labels, pa.int16()) if labels is not None else nulls,
            "predicted_label": pa.array(scores["predicted_label"].to_numpy(), pa.int16()),
            **f32,
            "fingerprint": pa.array(scores["fingerprint"], pa.string()),
            "train_similarity": pa.array(scores["train_similarity"].to_numpy(), pa.float32()),
            "nearest_train_id": pa.array(nearest, pa.string()),
        },
        schema=AUDIO_SHARD_SCHEMA,
    )


SHARD_MAKERS = {"image": image_shard, "text": text_shard, "audio": audio_shard}  # by kind


def run_shard(plan: BatchPlan, shard: int, home: Home, generator=None) -> ShardResult:
    """Generate and score shard `shard` of `plan` and write its part; skipped when its part is
    already written (or the batch already published). `generator`: the model's generator
    (default: loaded once per process from the plan's model files)."""
    s = plan.shards[shard]
    part = Path(plan.work_dir) / part_name(shard)
    if Path(plan.batch_dir).exists():  # publishing says so, once for the batch
        log.info("batch %s is published; shard %d skipped", plan.batch_id, shard)
        return ShardResult(shard, str(part), s.count, skipped=True)
    if part_ok(part, s.count):
        log.warning(
            "shard %d of batch %s reused from an earlier run: %s", shard, plan.batch_id, part
        )
        return ShardResult(shard, str(part), s.count, skipped=True)
    make = SHARD_MAKERS[plan.kind]
    write_part(part, make(plan, s, home, generator or plan.generator()))
    with _done_lock:
        _done[plan.batch_id] = _done.get(plan.batch_id, 0) + s.count
        done = _done[plan.batch_id]
    progress.report("generate", done, plan.n)
    return ShardResult(shard, str(part), s.count, skipped=False)
