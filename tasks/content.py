"""Tasks of the content stages: a curated batch from a registered model, shard by shard.

A batch is planned once (model version resolved, shard seeds fixed, policy frozen), then each
shard generates and scores its items and writes one Parquet part atomically under
`content/.work/<batch-id>/`; a rerun skips the shards whose part is there and readable. The final
step reads every part, applies the batch-wide decisions (near-duplicates across shards), and
publishes `content/<batch-id>/` in one rename: Parquet parts, manifest, contact sheet and an
HTML review report. The batch id is derived from everything that determines the content (model
version, n, shards, seed, policy), so a rerun finds the published batch instead of a second one.

Images (dcgan, vae) and text (charlstm, transformer) share this path; what differs is what a
shard generates and scores (`_image_shard`, `_text_shard`), the batch-wide decision and the
report's cards. Text items are continuations of the prompts of a prompt file (item i gets prompt
i mod P) or, without one, new documents; each item has its own seed, derived from its shard's,
so it can be regenerated alone. Text shards score each item under the generating model
(perplexity) and against the model's training text (long n-gram overlap), which they read from
the snapshot the model version names; MinHash near-duplicates are decided across shards.

The flows wire `plan_batch`, `generate_shard` (mapped over shards) and `finalize_batch`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from aigc_core import names, progress
from aigc_core.atomic import remove_stale_staging, sha256_file, staged_dir, write_bytes_atomic
from aigc_core.curation.images import decide_images, rejected_by_reason, score_images
from aigc_core.curation.policy import Policy, load_policy
from aigc_core.curation.text import TextPolicy, TrainingNgrams, decide_texts, score_texts
from aigc_core.data.snapshot import find_snapshot, image_arrays, read_table, text_split
from aigc_core.generation.shards import part_name, plan_shards, shard_seed
from aigc_core.generation.text import TextSampling, load_prompts
from aigc_core.images import contact_sheet, decode_png, png_bytes, to_uint8
from aigc_core.paths import Home
from aigc_core.report import ReportItem, write_report
from tasks import mlflow_adapter as tracking
from tasks.evaluation import load_or_train_evaluator

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
REPORT = "report.html"
CONTACT_SHEET = "contact_sheet.png"
DEFAULT_SHARD_SIZE = 4096  # items per shard when the caller does not choose
IMAGE_FAMILIES = frozenset({"dcgan", "vae"})  # served by aigc_core/serving/image_generator.py
TEXT_FAMILIES = frozenset({"charlstm", "transformer"})  # served by .../text_generator.py

_ITEM = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("index", pa.int32(), nullable=False),  # position in the batch
    pa.field("shard", pa.int32(), nullable=False),
]
# What an image shard writes: the items and every per-item score.
IMAGE_SHARD_SCHEMA = pa.schema(
    [
        *_ITEM,
        pa.field("seed", pa.int64(), nullable=False),  # the shard's seed
        pa.field("png", pa.binary(), nullable=False),
        pa.field("predicted_label", pa.int16()),
        pa.field("confidence", pa.float32()),
        pa.field("phash", pa.int64()),
        pa.field("train_distance", pa.float32()),
        pa.field("nearest_train_id", pa.string()),
    ]
)
# What a text shard writes before the scores (`text_shard_schema` adds them).
_TEXT_ITEM = [
    *_ITEM,
    pa.field("seed", pa.int64(), nullable=False),  # the item's own seed
    pa.field("prompt", pa.string(), nullable=False),  # empty: a new document
    pa.field("text", pa.string(), nullable=False),  # the continuation, without the prompt
    pa.field("finish_reason", pa.string(), nullable=False),  # "length" or "stop"
]
_TEXT_SCORE_TYPES = {"words": pa.int32(), "blocklist": pa.string(), "pii": pa.string()}


def text_score_columns(policy: TextPolicy) -> list[str]:
    """The per-item score columns `score_texts` writes under `policy`."""
    return [
        "words",
        "mean_word_length",
        "alpha_word_frac",
        "symbol_word_ratio",
        "perplexity",
        "dup_line_frac",
        "dup_line_char_frac",
        "blocklist",
        "pii",
        "train_ngram_frac",
        *(f"top_{n}gram_frac" for n in policy.max_top_ngram_fraction or {}),
        *(f"dup_{n}gram_frac" for n in policy.max_duplicate_ngram_fraction or {}),
    ]


def text_shard_schema(policy: TextPolicy) -> pa.Schema:
    """What a text shard writes: the items and every per-item score the policy asks for."""
    scores = [
        pa.field(c, _TEXT_SCORE_TYPES.get(c, pa.float64())) for c in text_score_columns(policy)
    ]
    return pa.schema([*_TEXT_ITEM, *scores])


def shard_schema(plan: dict) -> pa.Schema:
    if plan["kind"] == "text":
        return text_shard_schema(TextPolicy(**plan["policy"]["text"]))
    return IMAGE_SHARD_SCHEMA


_LINEAGE = ("batch_id", "model_name", "model_version", "run_id", "snapshot_id")


def batch_schema(shard: pa.Schema) -> pa.Schema:
    """What the published batch holds: the shard columns, the decision and the lineage."""
    return pa.schema(
        [
            *shard,
            pa.field("duplicate_of", pa.int32(), nullable=False),
            pa.field("kept", pa.bool_(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            *(pa.field(k, pa.string(), nullable=False) for k in _LINEAGE),
        ]
    )


# ---------------------------------------------------------------------------------------------
# model references and the plan


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """ "NAME", "NAME@ALIAS" or "NAME/VERSION" -> (name, alias, version); the default alias is
    champion."""
    ref = ref.strip()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = None
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
        alias = None
        if not version.isdigit():
            raise ValueError(f"model {ref!r}: a version after '/' is a number, e.g. {name}/3")
    else:
        name, alias, version = ref, tracking.CHAMPION, None
    if not name or (alias is not None and not alias):
        raise ValueError(f"model {ref!r}: expected NAME, NAME@ALIAS or NAME/VERSION")
    return name, alias, version


def resolve_model(ref: str) -> tracking.Version:
    """The registered version a reference names (MLflow must be configured)."""
    name, alias, version = parse_model_ref(ref)
    if alias is not None:
        mv = tracking.alias_version(name, alias)
        if mv is None:
            raise LookupError(
                f"registered model {name!r} has no {alias!r} alias: run the nightly pipeline "
                f"first so a version can be promoted, or name a version as {name}/VERSION"
            )
        return mv
    mv = tracking.get_version(name, version)
    if mv is None:
        raise LookupError(
            f"registered model {name!r} has no version {version}: list its versions "
            f"with `aigc models`"
        )
    return mv


def _batch_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def make_plan(
    model_ref: str,
    n: int,
    shards: int | None,
    seed: int,
    home: str,
    policy: Policy | None = None,
    prompt_file: str | None = None,
    sampling: dict | None = None,
) -> dict:
    """Resolve the model, fix shard seeds, the policy and (text) the prompts and sampling
    options; JSON-able, so it travels to workers. `sampling`: TextSampling fields, text only."""
    h = Home.resolve(home).ensure()
    remove_stale_staging(h.content)  # batches whose publishing was killed
    tracking.configure(h)
    mv = resolve_model(model_ref)
    family = mv.tags.get("family", "dcgan")
    if family not in IMAGE_FAMILIES | TEXT_FAMILIES:
        raise ValueError(
            f"model {mv.name} version {mv.version} is a {family!r} model; batches are built for "
            f"{', '.join(sorted(IMAGE_FAMILIES | TEXT_FAMILIES))}"
        )
    kind = "text" if family in TEXT_FAMILIES else "image"
    if kind == "image" and (prompt_file is not None or sampling):
        given = f"--prompt-file {prompt_file}" if prompt_file else ", ".join(sorted(sampling))
        raise ValueError(
            f"model {mv.name} version {mv.version} generates images, and prompts and sampling "
            f"options ({given}) apply to text models; drop --prompt-file and the sampling options"
        )
    snapshot_id = mv.tags.get("snapshot_id", "")
    if not snapshot_id:
        raise LookupError(
            f"model {mv.name} version {mv.version} has no snapshot_id tag, so its items cannot "
            "be checked against its training data; register it through the nightly pipeline"
        )
    policy = policy or Policy()
    k = shards if shards is not None else max(1, -(-n // DEFAULT_SHARD_SIZE))
    plan = plan_shards(n, k, seed)
    key = {
        "format": FORMAT_VERSION,
        "model": mv.name,
        "version": mv.version,
        "n": n,
        "shards": k,
        "seed": seed,
    }
    model_uri = f"models:/{mv.name}/{mv.version}"
    if kind == "image":
        kind_plan = {"policy": {"image": policy.image.to_dict()}}
        key["policy"] = kind_plan["policy"]["image"]  # the key image batches always had
        # the evaluator is trained once here, not raced for by shards on several workers
        load_or_train_evaluator(h, snapshot_id)
    else:
        try:
            chosen = TextSampling(**(sampling or {}))
        except TypeError as e:
            raise ValueError(f"sampling options: {e}") from None
        prompts = load_prompts(prompt_file) if prompt_file is not None else []
        _check_text_request(_load_model(model_uri), prompts, chosen, prompt_file)
        kind_plan = {
            "policy": {"text": policy.text.to_dict()},
            "sampling": chosen.to_dict(),
            "prompts": prompts,
            "prompt_file": prompt_file,
        }
        key.update(
            kind="text",
            policy=kind_plan["policy"]["text"],
            sampling=kind_plan["sampling"],
            prompts=hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
        )
    batch_id = names.batch_id(_batch_id(key))
    batch_dir = names.inside(h.content, h.content / batch_id)
    return {
        "batch_id": batch_id,
        "kind": kind,
        "model_ref": model_ref,
        "model_name": mv.name,
        "model_version": mv.version,
        "family": family,
        "model_uri": model_uri,
        "run_id": mv.run_id,
        "snapshot_id": snapshot_id,
        "seed": seed,
        "n": n,
        "shards": [s.to_dict() for s in plan],
        **kind_plan,
        "work_dir": str(h.content / ".work" / batch_id),
        "batch_dir": str(batch_dir),
    }


def _check_text_request(
    model, prompts: list[str], sampling: TextSampling, prompt_file: str | None
) -> None:
    """Fail at planning, not in a shard: prompts and stop strings the model cannot read, or a
    model registered before text batches existed."""
    if not hasattr(model, "score"):
        raise ValueError(
            "this model version was registered with an older text generator that cannot score "
            "its texts for curation: train and register it again"
        )
    model.stop_ids(sampling.stop)
    seen: set[str] = set()
    for i, p in enumerate(prompts or [""]):
        if p in seen:
            continue
        seen.add(p)
        try:
            model.context_ids(p)
        except ValueError as e:
            where = f"prompt {i + 1} of {prompt_file} ({p[:40]!r})" if prompt_file else "prompts"
            raise ValueError(f"{where}: {e}") from None


# ---------------------------------------------------------------------------------------------
# shards

_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()
_done: dict[str, int] = {}


def _cached(key: tuple, load):
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load()
        return _cache[key]


def _load_model(model_uri: str):
    """The model's pyfunc instance (`generate`, and `score` for text), once per process."""
    return _cached(
        ("model", tracking.client().tracking_uri, model_uri),
        lambda: tracking.load_python_model(model_uri),
    )


def _training_table(h: Home, snapshot_id: str) -> pa.Table:
    table = read_table(find_snapshot(h.datasets, snapshot_id))
    return table.filter(pc.equal(table.column("split"), "train"))


def _write_part(path: Path, table: pa.Table) -> None:
    """Write one Parquet part atomically (temporary name, fsync, rename)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(path, buf.getvalue())


def _part_ok(path: Path, rows: int) -> bool:
    try:
        return pq.read_metadata(path).num_rows == rows
    except (OSError, pa.ArrowException):
        return False


def _image_shard(plan: dict, s: dict, h: Home, model) -> pa.Table:
    """Images of one shard (drawn from the shard's seed), scored by the evaluator and against
    the training images."""
    evaluator = _cached(
        ("evaluator", str(h.root), plan["snapshot_id"]),
        lambda: load_or_train_evaluator(h, plan["snapshot_id"])[0],
    )

    def training_images():
        train = _training_table(h, plan["snapshot_id"])
        return image_arrays(train)[0], train.column("id").to_pylist()

    train, train_ids = _cached(("train", str(h.root), plan["snapshot_id"]), training_images)
    images = to_uint8(model.generate(s["count"], s["seed"]))  # (count, H, W) uint8
    _, probs = evaluator.embed(torch.from_numpy(images.astype(np.float32)[:, None] / 255.0))
    scores = score_images(images, probs, train)
    idx = np.arange(s["start"], s["start"] + s["count"])
    return pa.table(
        {
            "id": [f"{plan['batch_id']}-{i:07d}" for i in idx],
            "index": pa.array(idx, pa.int32()),
            "shard": pa.array(np.full(len(idx), s["index"]), pa.int32()),
            "seed": pa.array(np.full(len(idx), s["seed"]), pa.int64()),
            "png": [png_bytes(img) for img in images],
            "predicted_label": pa.array(scores["predicted_label"], pa.int16()),
            "confidence": pa.array(scores["confidence"], pa.float32()),
            "phash": pa.array(scores["phash"], pa.int64()),
            "train_distance": pa.array(scores["train_distance"], pa.float32()),
            "nearest_train_id": [train_ids[i] for i in scores["nearest_train"]],
        },
        schema=IMAGE_SHARD_SCHEMA,
    )


def item_prompt(plan: dict, index: int) -> str:
    """The prompt of item `index`: the prompts in turn, or empty (a new document)."""
    prompts = plan["prompts"]
    return prompts[index % len(prompts)] if prompts else ""


def _text_shard(plan: dict, s: dict, h: Home, model) -> pa.Table:
    """Texts of one shard, each from its own seed, scored per item: length, perplexity under
    the model, repetition, blocklist, PII and n-gram overlap with the training text."""
    policy = TextPolicy(**plan["policy"]["text"])
    training = _cached(
        ("train-ngrams", str(h.root), plan["snapshot_id"], policy.train_ngram),
        lambda: TrainingNgrams(
            text_split(_training_table(h, plan["snapshot_id"])), policy.train_ngram
        ),
    )
    idx = list(range(s["start"], s["start"] + s["count"]))
    prompts = [item_prompt(plan, i) for i in idx]
    seeds = [shard_seed(s["seed"], j) for j in range(s["count"])]
    sampling = plan["sampling"]
    generated = model.generate(
        prompts,
        sampling["max_new_tokens"],
        seeds,
        temperature=sampling["temperature"],
        top_k=sampling["top_k"],
        top_p=sampling["top_p"],
        stop=sampling["stop"],
    )
    texts = [t for t, _ in generated]
    perplexities = np.exp(np.asarray(model.score(prompts, texts), dtype=np.float64))
    scores = score_texts(texts, policy, perplexities, training)
    schema = text_shard_schema(policy)
    columns = {
        "id": [f"{plan['batch_id']}-{i:07d}" for i in idx],
        "index": idx,
        "shard": [s["index"]] * len(idx),
        "seed": seeds,
        "prompt": prompts,
        "text": texts,
        "finish_reason": [r for _, r in generated],
        **{c: scores[c].to_numpy() for c in text_score_columns(policy)},
    }
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)


def run_shard(plan: dict, shard: int, home: str) -> dict:
    """Generate and score one shard; skipped when its part is already written (or the batch is
    already published). Returns a small JSON-able record."""
    s = plan["shards"][shard]
    part = Path(plan["work_dir"]) / part_name(shard)
    record = {"shard": shard, "path": str(part), "rows": s["count"]}
    if Path(plan["batch_dir"]).exists():  # publishing says so, once for the batch
        log.info("batch %s is published; shard %d skipped", plan["batch_id"], shard)
        return {**record, "skipped": True}
    if _part_ok(part, s["count"]):
        log.warning(
            "shard %d of batch %s reused from an earlier run: %s", shard, plan["batch_id"], part
        )
        return {**record, "skipped": True}
    h = Home.resolve(home)
    tracking.configure(h)
    model = _load_model(plan["model_uri"])
    make = _text_shard if plan["kind"] == "text" else _image_shard
    _write_part(part, make(plan, s, h, model))
    with _cache_lock:
        _done[plan["batch_id"]] = _done.get(plan["batch_id"], 0) + s["count"]
        done = _done[plan["batch_id"]]
    progress.report("generate", done, plan["n"])
    return {**record, "skipped": False}


# ---------------------------------------------------------------------------------------------
# the published batch


def _read_parts(plan: dict) -> pa.Table:
    schema = shard_schema(plan)
    tables = []
    for s in plan["shards"]:
        path = Path(plan["work_dir"]) / part_name(s["index"])
        if not _part_ok(path, s["count"]):
            raise RuntimeError(
                f"shard {s['index']} of batch {plan['batch_id']} is missing or unreadable at "
                f"{path}: run the batch again to regenerate it"
            )
        tables.append(pq.read_table(path, schema=schema))
    table = pa.concat_tables(tables)
    index = table.column("index").to_numpy()
    if not np.array_equal(index, np.arange(plan["n"])):
        raise RuntimeError(
            f"batch {plan['batch_id']}: shard parts do not cover items 0..{plan['n'] - 1} "
            f"exactly once; delete {plan['work_dir']} and run the batch again"
        )
    return table


def _sheet_png(images: list[np.ndarray], captions: list[str], kept: bool) -> bytes | None:
    if not images:
        return None
    sheet = contact_sheet(
        np.stack(images), captions=captions, marks=[kept] * len(images), cols=16, scale=2
    )
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _reasons(reason: str) -> list[str]:
    return reason.split(";") if reason else []


def _decide(plan: dict, table: pa.Table):
    """The batch-wide decision: a DataFrame with duplicate_of, kept and reason per item."""
    policy = Policy.from_dict(plan["policy"])
    if plan["kind"] == "text":
        scores = table.select(text_score_columns(policy.text)).to_pandas()
        return decide_texts(table.column("text").to_pylist(), scores, policy.text)
    scores = table.select(["confidence", "phash", "train_distance"]).to_pandas()
    return decide_images(scores, policy.image)


def _image_report(full: pa.Table) -> tuple[list[ReportItem], dict[str, bytes | None]]:
    """Report cards with thumbnails, and contact sheets of the first 256 kept and rejected."""
    items, sheet_imgs = [], {True: ([], []), False: ([], [])}
    cols = ["id", "png", "predicted_label", "confidence", "train_distance", "kept", "reason"]
    for row in full.select(cols).to_pylist():
        imgs, caps = sheet_imgs[row["kept"]]
        if len(imgs) < 256:
            imgs.append(decode_png(row["png"]))
            caps.append(f"{row['predicted_label']} {row['confidence']:.2f}")
        items.append(
            ReportItem(
                id=row["id"],
                kept=row["kept"],
                reasons=_reasons(row["reason"]),
                scores={
                    "label": row["predicted_label"],
                    "conf": row["confidence"],
                    "train_d": row["train_distance"],
                },
                png=row["png"],
            )
        )
    sheets = {
        name: _sheet_png(*sheet_imgs[kept], kept=kept)
        for name, kept in (("kept", True), ("rejected", False))
    }
    return items, sheets


def _text_report(full: pa.Table) -> tuple[list[ReportItem], dict[str, bytes | None]]:
    """Report cards with the prompt, the text and its main scores."""
    cols = ["id", "prompt", "text", "finish_reason", "seed", "words", "perplexity"]
    cols += ["train_ngram_frac", "kept", "reason"]
    items = [
        ReportItem(
            id=row["id"],
            kept=row["kept"],
            reasons=_reasons(row["reason"]),
            scores={
                "ppl": row["perplexity"],
                "words": row["words"],
                "train_overlap": row["train_ngram_frac"],
                "finish": row["finish_reason"],
                "seed": row["seed"],
            },
            prompt=row["prompt"],
            text=row["text"],
        )
        for row in full.select(cols).to_pylist()
    ]
    return items, {}


def publish_batch(plan: dict, home: str, flow_run_id: str = "") -> dict:
    """Decide, publish `content/<batch-id>/` atomically, log to MLflow; returns the manifest."""
    h = Home.resolve(home)
    final = Path(plan["batch_dir"])
    if (final / MANIFEST).exists():
        log.warning("batch %s was already published: reused %s", plan["batch_id"], final)
        return json.loads((final / MANIFEST).read_text())
    tracking.configure(h)
    progress.report("curate", 0, plan["n"])
    kind = plan["kind"]
    table = _read_parts(plan)
    decided = _decide(plan, table)
    reasons = rejected_by_reason(decided["reason"])
    n_kept = int(decided["kept"].sum())
    bid, n = plan["batch_id"], plan["n"]
    lineage = {"batch_id": bid, **{k: plan[k] for k in _LINEAGE[1:]}}
    schema = batch_schema(table.schema)
    full = table
    for name, values, typ in (
        ("duplicate_of", decided["duplicate_of"], pa.int32()),
        ("kept", decided["kept"], pa.bool_()),
        ("reason", decided["reason"], pa.string()),
    ):
        full = full.append_column(schema.field(name), pa.array(values, typ))
    for k, v in lineage.items():
        full = full.append_column(schema.field(k), pa.array([v] * n, pa.string()))

    batch_run = tracking.start_run(
        f"batch-{bid}",
        {"aigc.stage": "content-batch", "batch_id": bid, "flow_run_id": flow_run_id, **lineage},
    )
    with tracking.run_guard(batch_run, finish=True):
        report_items, sheets = (_text_report if kind == "text" else _image_report)(full)
        manifest = {
            "format_version": FORMAT_VERSION,
            **lineage,
            "kind": kind,
            "family": plan["family"],
            "model_ref": plan["model_ref"],
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seed": plan["seed"],
            "shards": plan["shards"],
            "policy": plan["policy"],
            **(
                {
                    "sampling": plan["sampling"],
                    "prompt_file": plan["prompt_file"],
                    "n_prompts": len(plan["prompts"]),
                }
                if kind == "text"
                else {}
            ),
            "n_generated": n,
            "n_kept": n_kept,
            "n_rejected": n - n_kept,
            "rejected_by_reason": reasons,
            "batch_run_id": batch_run,
            "flow_run_id": flow_run_id,
            "files": [],
            "contact_sheet": CONTACT_SHEET if kind == "image" else None,
            "report": REPORT,
        }
        summary_keys = ["batch_id", "model_name", "model_version", "run_id", "snapshot_id"]
        summary_keys += ["seed", "n_generated", "n_kept", "rejected_by_reason", "policy"]
        summary_keys += ["sampling", "n_prompts", "created_at"]
        summary = {k: manifest[k] for k in summary_keys if k in manifest}
        try:
            with staged_dir(final, size_hint=full.nbytes) as tmp:
                for s in plan["shards"]:
                    path = tmp / part_name(s["index"])
                    part = full.slice(s["start"], s["count"])
                    pq.write_table(part, path, compression="zstd")
                    manifest["files"].append(
                        {
                            "path": path.name,
                            "rows": s["count"],
                            "kept": int(pc.sum(part.column("kept")).as_py() or 0),
                            "sha256": sha256_file(path),
                        }
                    )
                if kind == "image":
                    (tmp / CONTACT_SHEET).write_bytes(sheets["kept"] or sheets["rejected"])
                write_report(
                    tmp / REPORT, f"Content batch {bid}", summary, report_items, sheets=sheets
                )
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        except FileExistsError:  # published concurrently by another run of the same batch
            return json.loads((final / MANIFEST).read_text())
        tracking.log_params(
            batch_run,
            {
                "n": n,
                "seed": plan["seed"],
                "shards": len(plan["shards"]),
                "model_uri": plan["model_uri"],
                **{f"policy.{k}": v for k, v in plan["policy"][kind].items()},
                **{f"sampling.{k}": v for k, v in plan.get("sampling", {}).items()},
                **({"prompts": len(plan["prompts"])} if kind == "text" else {}),
            },
        )
        tracking.log_metrics(
            batch_run,
            {
                "n_generated": n,
                "n_kept": n_kept,
                "kept_fraction": n_kept / n,
                **{f"rejected.{_metric_key(k)}": v for k, v in reasons.items()},
            },
        )
        for name in (MANIFEST, REPORT, CONTACT_SHEET):
            if (final / name).exists():
                tracking.log_artifact(batch_run, final / name, "content")
    shutil.rmtree(plan["work_dir"], ignore_errors=True)
    progress.report("curate", n, n)
    log.info("batch %s published: %d of %d kept", bid, n_kept, n)
    return manifest


def _metric_key(reason: str) -> str:
    """An MLflow metric name for a reason: `low_confidence<0.9` -> `low_confidence_lt_0.9`."""
    return reason.replace("<", "_lt_").replace(">", "_gt_")


def publish_artifacts(manifest: dict) -> None:
    """Prefect table and markdown artifacts for a published batch."""
    bid = manifest["batch_id"]
    rows = [{"reason": "kept", "items": manifest["n_kept"]}] + [
        {"reason": k, "items": v} for k, v in sorted(manifest["rejected_by_reason"].items())
    ]
    create_table_artifact(
        rows, key="content-batch-reasons", description=f"batch {bid}: items per reason"
    )
    folder = Path(manifest.get("batch_dir", ""))
    create_markdown_artifact(
        f"# Content batch `{bid}`\n\n"
        f"model `{manifest['model_name']}` v{manifest['model_version']} (run "
        f"`{manifest['run_id']}`), snapshot `{manifest['snapshot_id']}`\n\n"
        f"**{manifest['n_kept']} of {manifest['n_generated']} kept**; rejected: "
        f"{manifest['rejected_by_reason'] or 'none'}\n\n"
        f"policy: `{json.dumps(manifest['policy'], sort_keys=True)}`\n\n"
        + (
            f"sampling: `{json.dumps(manifest['sampling'], sort_keys=True)}`, "
            f"{manifest['n_prompts']} prompt(s)\n\n"
            if "sampling" in manifest
            else ""
        )
        + f"review report: `{folder / REPORT}`",
        key="content-batch",
        description=f"content batch {bid}",
    )


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


# ---------------------------------------------------------------------------------------------
# Prefect tasks


@task(name="plan-batch")
def plan_batch(
    model_ref: str,
    n: int,
    shards: int | None,
    seed: int,
    home: str,
    policy_file: str | None = None,
    prompt_file: str | None = None,
    policy: dict | None = None,
    sampling: dict | None = None,
) -> dict:
    """Resolve the model version, fix shard seeds and the policy; prepare the evaluator
    (images) or read the prompts and check them and the sampling options (text).
    `policy` (a dict in the policy file's format) is used instead of `policy_file` when given;
    `sampling`: max_new_tokens, temperature, top_k, top_p, stop (text models only)."""
    chosen = Policy.from_dict(policy) if policy is not None else load_policy(policy_file)
    return make_plan(model_ref, n, shards, seed, home, chosen, prompt_file, sampling)


@task(name="generate-shard", retries=1, retry_delay_seconds=2)
def generate_shard(plan: dict, shard: int, home: str) -> dict:
    """One shard: generate, score, write its Parquet part atomically (skipped when written)."""
    return run_shard(plan, shard, home)


@task(name="finalize-batch")
def finalize_batch(plan: dict, shard_records: list[dict], home: str) -> dict:
    """Batch-wide decisions, atomic publication, MLflow run, Prefect artifacts."""
    manifest = publish_batch(plan, home, flow_run_id=_flow_run_id())
    manifest = {**manifest, "batch_dir": plan["batch_dir"]}
    publish_artifacts(manifest)
    return {**manifest, "shards_skipped": sum(bool(r.get("skipped")) for r in shard_records)}
