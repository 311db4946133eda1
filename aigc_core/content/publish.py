"""Publishing a content batch: read every shard part, decide across shards, write the batch.

`curate` reads the parts (each must be there, readable, and together cover items 0..n-1 once)
and applies the batch-wide decision of the batch's kind (near-duplicates across shards among
them; for an image or a clip asked to be a class, whether the evaluator sees that class),
counting the items asked and kept per class when the request named classes. `publish` writes
`content/<batch-id>/` in one rename: the Parquet parts with the decision and every item's
lineage, the manifest, an HTML review report (for audio, a player and a spectrogram per card)
and, for images, a contact sheet; then it removes the working parts. A batch published
already, or concurrently by another run of the same request, is returned as it is
(`published`).

What the caller logs about a batch (its tracking run's tags, parameters, metrics and files, a
summary table and text) is computed here from the plan and the batch; logging it is the
caller's.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile
from PIL import ImageFont

from aigc_core import progress, stages
from aigc_core.atomic import sha256_file, staged_dir
from aigc_core.audio import spectrogram_png
from aigc_core.content.manifest import Batch
from aigc_core.content.plan import BatchPlan
from aigc_core.content.schema import (
    CONTACT_SHEET,
    FORMAT_VERSION,
    MANIFEST,
    REPORT,
    batch_schema,
    shard_schema,
    text_score_columns,
)
from aigc_core.content.shard import part_ok
from aigc_core.curation.audio import decide_audio
from aigc_core.curation.decisions import rejected_by_reason
from aigc_core.curation.images import decide_images
from aigc_core.curation.policy import Policy
from aigc_core.curation.text import decide_texts
from aigc_core.data.snapshot import SnapshotError, find_snapshot
from aigc_core.generation.shards import part_name
from aigc_core.images import contact_sheet, decode_png
from aigc_core.paths import Home
from aigc_core.report import MAX_CARDS, ReportItem, check_mlflow_url, shown_items, write_report

log = logging.getLogger(__name__)

SHEET_ITEMS = 256  # items per contact sheet (kept, rejected)
SHEET_WIDTH = 1200  # px: a contact sheet fits the report's page unscaled
SHEET_PAD = 2  # px around each cell's image (contact_sheet's default)
CAPTION_CHARS = 10  # a class name longer than this is cut in a contact sheet's caption
# cards per tab of an audio batch's report: each inlines its WAV (11 kB of base64 for a
# 0.5 s clip at 8 kHz, 44 kB for 1 s at 16 kHz) and a spectrogram (about 28 kB), so 100 kept
# and 100 rejected cards keep the report within about 15 MB
AUDIO_CARDS = 100


@dataclass(frozen=True)
class Curated:
    """A batch decided but not yet published: every item with its decision and lineage."""

    table: pa.Table  # the published schema: shard columns, decision, lineage
    n_kept: int
    rejected_by_reason: dict[str, int]
    labels: dict[str, dict[str, int]] | None = None  # `label_counts`: when classes were asked
    predicted_labels: dict[str, dict[str, int]] | None = None  # audio: `predicted_counts`


def published(plan: BatchPlan, shards_skipped: int = 0) -> Batch | None:
    """The batch `plan` describes if it is published already (a warning says so), else None."""
    final = Path(plan.batch_dir)
    if not (final / MANIFEST).exists():
        return None
    log.warning("batch %s was already published: reused %s", plan.batch_id, final)
    return Batch.read(final, shards_skipped)


def read_parts(plan: BatchPlan) -> pa.Table:
    """Every shard part of the batch, in item order; an error naming a missing part."""
    schema = shard_schema(plan.kind, plan.policy)
    tables = []
    for s in plan.shards:
        path = Path(plan.work_dir) / part_name(s.index)
        if not part_ok(path, s.count):
            raise RuntimeError(
                f"shard {s.index} of batch {plan.batch_id} is missing or unreadable at "
                f"{path}: run the batch again to regenerate it"
            )
        tables.append(pq.read_table(path, schema=schema))
    table = pa.concat_tables(tables)
    index = table.column("index").to_numpy()
    if not np.array_equal(index, np.arange(plan.n)):
        raise RuntimeError(
            f"batch {plan.batch_id}: shard parts do not cover items 0..{plan.n - 1} "
            f"exactly once; delete {plan.work_dir} and run the batch again"
        )
    return table


def decide(plan: BatchPlan, table: pa.Table) -> pd.DataFrame:
    """The batch-wide decision: a DataFrame with duplicate_of, kept and reason per item."""
    policy = Policy.from_dict(dict(plan.policy))
    if plan.kind == "text":
        scores = table.select(text_score_columns(policy.text)).to_pandas()
        return decide_texts(table.column("text").to_pylist(), scores, policy.text)
    if plan.kind == "audio":
        columns = ["confidence", "predicted_label", "requested_label", "silence_fraction"]
        columns += ["clipping_fraction", "dc_offset", "fingerprint", "train_similarity"]
        return decide_audio(table.select(columns).to_pandas(), policy.audio)
    columns = ["confidence", "phash", "train_distance", "predicted_label", "requested_label"]
    return decide_images(table.select(columns).to_pandas(), policy.image)


def label_counts(table: pa.Table) -> dict[str, dict[str, int]] | None:
    """Items asked per class and kept per class, {"requested": {"7": 1000}, "kept": {"7": 912}}
    (classes as strings, in order; a class none of whose items was kept counts 0), or None when
    no item was asked for a class. `table` has `requested_label` and `kept`."""
    if "requested_label" not in table.column_names:
        return None
    asked = table.select(["requested_label", "kept"]).to_pandas().dropna()
    if asked.empty:
        return None
    labels = asked["requested_label"].astype(np.int64)
    requested = labels.value_counts().sort_index()
    kept = labels[asked["kept"].to_numpy(bool)].value_counts()
    return {
        "requested": {str(k): int(v) for k, v in requested.items()},
        "kept": {str(k): int(kept.get(k, 0)) for k in requested.index},
    }


def predicted_counts(table: pa.Table) -> dict[str, dict[str, int]]:
    """Items per class the evaluator predicts, and kept per class, {"generated": {"3": 40},
    "kept": {"3": 31}} (classes as strings, in order; a class none of whose items was kept
    counts 0): what an audio batch holds by class, whether or not classes were asked."""
    df = table.select(["predicted_label", "kept"]).to_pandas()
    labels = df["predicted_label"].astype(np.int64)
    generated = labels.value_counts().sort_index()
    kept = labels[df["kept"].to_numpy(bool)].value_counts()
    return {
        "generated": {str(k): int(v) for k, v in generated.items()},
        "kept": {str(k): int(kept.get(k, 0)) for k in generated.index},
    }


def curate(plan: BatchPlan) -> Curated:
    """Read the shard parts and decide: every item with its decision and lineage."""
    progress.report("curate", 0, plan.n)
    table = read_parts(plan)
    decided = decide(plan, table)
    schema = batch_schema(table.schema)
    full = table
    for name, values, typ in (
        ("duplicate_of", decided["duplicate_of"], pa.int32()),
        ("kept", decided["kept"], pa.bool_()),
        ("reason", decided["reason"], pa.string()),
    ):
        full = full.append_column(schema.field(name), pa.array(values, typ))
    for k, v in plan.lineage.items():
        full = full.append_column(schema.field(k), pa.array([v] * plan.n, pa.string()))
    return Curated(
        full,
        int(decided["kept"].sum()),
        rejected_by_reason(decided["reason"]),
        label_counts(full) if plan.kind != "text" else None,
        predicted_counts(full) if plan.kind == "audio" else None,
    )


def snapshot_class_names(home: Home, snapshot_id: str) -> list[str] | None:
    """The class names of a snapshot's labels (its manifest's `label_names`: digits "0".."9",
    an image folder's subfolder names), or None where it has none or is not in `home`."""
    try:
        names = find_snapshot(home.datasets, snapshot_id).manifest.get("label_names")
    except SnapshotError as e:
        log.info("report shows class indices: %s", e)
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def class_label(index: int, class_names: list[str] | None) -> str:
    """The class name of a predicted label index, or the index where there is no name."""
    if class_names is not None and 0 <= index < len(class_names):
        return class_names[index]
    return str(index)


def caption(label: str, index: int, confidence: float) -> str:
    """A contact-sheet caption that cannot be misread, e.g. `4 · p=0.35`: the class, then the
    evaluator's confidence. A long name is cut; a name the sheet's font cannot draw (not
    printable ASCII) is replaced by its index (the card shows the full name)."""
    if not (label.isascii() and label.isprintable()):
        label = str(index)
    if len(label) > CAPTION_CHARS:
        label = label[: CAPTION_CHARS - 1] + "…"
    return f"{label} · p={confidence:.2f}"


def sheet_layout(image_width: int, captions: list[str]) -> tuple[int, int]:
    """(scale, columns) of a contact sheet: images scaled up (at least 2x) until the widest
    caption fits under one cell with a gap, so neighbouring captions do not run together; as
    many columns (up to 16) as fit in SHEET_WIDTH."""
    font = ImageFont.load_default()  # what contact_sheet draws captions with
    widest = max((font.getlength(c) for c in captions), default=0.0)
    scale = max(2, math.ceil((widest + 6 - 2 * SHEET_PAD) / image_width))
    cols = max(1, min(16, SHEET_WIDTH // (image_width * scale + 2 * SHEET_PAD)))
    return scale, cols


def _sheet_png(images: list[np.ndarray], captions: list[str], kept: bool) -> bytes | None:
    if not images:
        return None
    scale, cols = sheet_layout(images[0].shape[1], captions)
    sheet = contact_sheet(
        np.stack(images),
        captions=captions,
        marks=[kept] * len(images),
        cols=cols,
        scale=scale,
        pad=SHEET_PAD,
    )
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _reasons(reason: str) -> list[str]:
    return reason.split(";") if reason else []


def image_report(
    full: pa.Table, class_names: list[str] | None = None
) -> tuple[list[ReportItem], dict[str, bytes | None]]:
    """Report cards with thumbnails, and contact sheets of the first 256 kept and rejected;
    predicted labels (and the class asked, `asked`, where the request named one) by class name
    where `class_names` (the snapshot's) has one."""
    items, sheet_imgs = [], {True: ([], []), False: ([], [])}
    cols = ["id", "png", "predicted_label", "confidence", "train_distance", "kept", "reason"]
    has_asked = "requested_label" in full.column_names
    for row in full.select(cols + ["requested_label"] * has_asked).to_pylist():
        label = class_label(row["predicted_label"], class_names)
        asked = row.get("requested_label")
        scores = {} if asked is None else {"asked": class_label(asked, class_names)}
        imgs, caps = sheet_imgs[row["kept"]]
        if len(imgs) < SHEET_ITEMS:
            imgs.append(decode_png(row["png"]))
            caps.append(caption(label, row["predicted_label"], row["confidence"]))
        items.append(
            ReportItem(
                id=row["id"],
                kept=row["kept"],
                reasons=_reasons(row["reason"]),
                scores={
                    **scores,
                    "label": label,
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


def audio_report(
    full: pa.Table, class_names: list[str] | None = None, max_cards: int = AUDIO_CARDS
) -> tuple[list[ReportItem], dict[str, bytes | None]]:
    """Report cards with a player (the item's WAV) and a log-mel spectrogram, the predicted
    class (and the class asked, `asked`), confidence, level and memorization scores. Only the
    cards the report shows (`report.shown_items` of each tab) are given their WAV, read from
    the table by index, and a spectrogram: a batch's other clips never leave Arrow."""
    cols = ["id", "predicted_label", "confidence", "silence_fraction", "clipping_fraction"]
    cols += ["dc_offset", "train_similarity", "requested_label", "kept", "reason"]
    items = []
    for row in full.select(cols).to_pylist():
        asked = row["requested_label"]
        scores = {} if asked is None else {"asked": class_label(asked, class_names)}
        scores |= {
            "label": class_label(row["predicted_label"], class_names),
            "conf": row["confidence"],
            "silence": row["silence_fraction"],
            "clipping": row["clipping_fraction"],
            "dc": row["dc_offset"],
            "train_sim": row["train_similarity"],
        }
        items.append(ReportItem(row["id"], row["kept"], _reasons(row["reason"]), scores))
    index = {id(item): i for i, item in enumerate(items)}
    shown = sorted(
        index[id(item)]
        for kept in (True, False)
        for item in shown_items([i for i in items if i.kept == kept], max_cards)
    )
    picked = full.select(["wav", "sample_rate"]).take(pa.array(shown, pa.int64())).to_pylist()
    for i, row in zip(shown, picked, strict=True):
        clip, _ = soundfile.read(io.BytesIO(row["wav"]), dtype="int16")  # as a player reads it
        items[i].wav, items[i].png = row["wav"], spectrogram_png(clip, row["sample_rate"])
    return items, {}


def text_report(full: pa.Table) -> tuple[list[ReportItem], dict[str, bytes | None]]:
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


_SUMMARY_KEYS = ("batch_id", "model_name", "model_version", "run_id", "batch_run_id")
_SUMMARY_KEYS += ("snapshot_id", "seed")
_SUMMARY_KEYS += ("sample_rate", "predicted_labels")  # audio
_SUMMARY_KEYS += ("n_generated", "n_kept", "rejected_by_reason", "policy", "sampling")
_SUMMARY_KEYS += ("options",)  # the classes asked: a table of their own
_SUMMARY_KEYS += ("n_prompts", "created_at")


def publish(
    plan: BatchPlan,
    curated: Curated,
    *,
    batch_run_id: str = "",
    flow_run_id: str = "",
    shards_skipped: int = 0,
    mlflow_url: str = "",
    mlflow_experiment_id: str = "",
    class_names: list[str] | None = None,
) -> Batch:
    """Write `content/<batch-id>/` atomically and remove the working parts; the published
    batch. When another run of the same request published first, that batch is returned: its
    `batch_run_id` is not the one given.

    The review report links its run ids (in experiment `mlflow_experiment_id`) and model
    version to the MLflow UI at `mlflow_url` when given (an http(s) server;
    `report.mlflow_ui_url` makes one from a tracking URI), and
    names image classes by `class_names` (`snapshot_class_names`) instead of indices."""
    check_mlflow_url(mlflow_url)  # a URL the report must not link to fails before any write
    final = Path(plan.batch_dir)
    full, n, kind = curated.table, plan.n, plan.kind
    if kind == "image":
        report_items, sheets = image_report(full, class_names)
    elif kind == "audio":
        report_items, sheets = audio_report(full, class_names, AUDIO_CARDS)
    else:
        report_items, sheets = text_report(full)
    text = (
        {"sampling": plan.sampling, "prompt_file": plan.prompt_file, "n_prompts": len(plan.prompts)}
        if kind == "text"
        else {}
    )
    drawn = {"options": plan.options, "labels": curated.labels} if kind != "text" else {}
    if kind == "audio":
        drawn["sample_rate"] = int(full.column("sample_rate")[0].as_py())
        drawn["predicted_labels"] = curated.predicted_labels
    try:
        with staged_dir(final, size_hint=full.nbytes) as tmp:
            files = []
            for s in plan.shards:
                path = tmp / part_name(s.index)
                part = full.slice(s.start, s.count)
                pq.write_table(part, path, compression="zstd")
                files.append(
                    {
                        "path": path.name,
                        "rows": s.count,
                        "kept": int(pc.sum(part.column("kept")).as_py() or 0),
                        "sha256": sha256_file(path),
                    }
                )
            batch = Batch(
                format_version=FORMAT_VERSION,
                **plan.lineage,
                kind=kind,
                family=plan.family,
                model_ref=plan.model_ref,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                seed=plan.seed,
                shards=[s.to_dict() for s in plan.shards],
                policy=plan.policy,
                **text,
                **drawn,
                n_generated=n,
                n_kept=curated.n_kept,
                n_rejected=n - curated.n_kept,
                rejected_by_reason=curated.rejected_by_reason,
                batch_run_id=batch_run_id,
                flow_run_id=flow_run_id,
                files=files,
                contact_sheet=CONTACT_SHEET if kind == "image" else None,
                report=REPORT,
                batch_dir=str(final),
                shards_skipped=shards_skipped,
            )
            manifest = batch.manifest()
            if kind == "image":
                (tmp / CONTACT_SHEET).write_bytes(sheets["kept"] or sheets["rejected"])
            summary = {k: manifest[k] for k in _SUMMARY_KEYS if k in manifest}
            title = f"Content batch {plan.batch_id}"
            write_report(
                tmp / REPORT,
                title,
                summary,
                report_items,
                sheets=sheets,
                labels=label_rows(curated.labels, class_names),
                max_cards=AUDIO_CARDS if kind == "audio" else MAX_CARDS,
                mlflow_url=mlflow_url,
                mlflow_experiment_id=mlflow_experiment_id,
            )
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except FileExistsError:  # published concurrently by another run of the same batch
        return Batch.read(final, shards_skipped)
    shutil.rmtree(plan.work_dir, ignore_errors=True)
    progress.report("curate", n, n)
    log.info("batch %s published: %d of %d kept", plan.batch_id, curated.n_kept, n)
    return batch


def label_rows(
    labels: dict[str, dict[str, int]] | None, class_names: list[str] | None = None
) -> list[dict[str, Any]]:
    """One row per class asked: label, class (name), requested, kept; none when no class was
    asked."""
    if not labels:
        return []
    return [
        {
            "label": int(k),
            "class": class_label(int(k), class_names),
            "requested": v,
            "kept": labels["kept"].get(k, 0),
        }
        for k, v in labels["requested"].items()
    ]


# ---------------------------------------------------------------------------------------------
# what a caller logs about a batch


def run_name(plan: BatchPlan) -> str:
    return f"batch-{plan.batch_id}"


def run_tags(plan: BatchPlan, flow_run_id: str = "") -> dict[str, str]:
    """The batch run's tags: its stage, the flow run, and the batch's lineage."""
    return stages.tags(stage="content-batch", flow_run_id=flow_run_id, **plan.lineage)


def run_params(plan: BatchPlan) -> dict[str, Any]:
    """The batch run's parameters: the request, the policy, (text) the sampling options,
    (images) the generation options and the classes asked (`labels`: the first of the
    pattern, e.g. "3,7" or "3,3,7,...")."""
    return {
        "n": plan.n,
        "seed": plan.seed,
        "shards": len(plan.shards),
        "model_uri": plan.model_uri,
        **{f"policy.{k}": v for k, v in plan.policy[plan.kind].items()},
        **{f"sampling.{k}": v for k, v in (plan.sampling or {}).items()},
        **{f"options.{k}": v for k, v in (plan.options or {}).items()},
        **({"labels": _pattern_text(plan.labels)} if plan.labels else {}),
        **({"prompts": len(plan.prompts)} if plan.kind == "text" else {}),
    }


def _pattern_text(pattern: tuple[int, ...], most: int = 20) -> str:
    shown = ",".join(map(str, pattern[:most]))
    return shown + (f",... ({len(pattern)} in turn)" if len(pattern) > most else "")


def metric_key(reason: str) -> str:
    """A metric name for a reason: `low_confidence<0.9` -> `low_confidence_lt_0.9`."""
    return reason.replace("<", "_lt_").replace(">", "_gt_")


def run_metrics(batch: Batch) -> dict[str, float]:
    """The batch run's metrics: counts, the kept fraction, items rejected per reason, and
    items asked and kept per class (`label_7.requested`, `label_7.kept`) when classes were
    asked."""
    labels = batch.labels or {}
    return {
        "n_generated": batch.n_generated,
        "n_kept": batch.n_kept,
        "kept_fraction": batch.n_kept / batch.n_generated,
        **{f"rejected.{metric_key(k)}": v for k, v in batch.rejected_by_reason.items()},
        **{f"label_{k}.{what}": v for what, c in labels.items() for k, v in c.items()},
    }


def reason_rows(batch: Batch) -> list[dict[str, Any]]:
    """Items per reason, kept first: a summary table."""
    return [{"reason": "kept", "items": batch.n_kept}] + [
        {"reason": k, "items": v} for k, v in sorted(batch.rejected_by_reason.items())
    ]


def summary_markdown(batch: Batch) -> str:
    """A short Markdown summary of the batch: lineage, counts, policy, where its report is."""
    sampling = (
        f"sampling: `{json.dumps(batch.sampling, sort_keys=True)}`, {batch.n_prompts} prompt(s)\n\n"
        if batch.kind == "text"
        else ""
    )
    if batch.options:
        sampling += f"generation options: `{json.dumps(batch.options, sort_keys=True)}`\n\n"
    if batch.labels:
        sampling += (
            "per class asked (kept of requested): "
            + ", ".join(
                f"{k}: {batch.labels['kept'].get(k, 0)} of {v}"
                for k, v in batch.labels["requested"].items()
            )
            + "\n\n"
        )
    return (
        f"# Content batch `{batch.batch_id}`\n\n"
        f"model `{batch.model_name}` v{batch.model_version} (run "
        f"`{batch.run_id}`), snapshot `{batch.snapshot_id}`\n\n"
        f"**{batch.n_kept} of {batch.n_generated} kept**; rejected: "
        f"{dict(batch.rejected_by_reason) or 'none'}\n\n"
        f"policy: `{json.dumps(batch.policy, sort_keys=True)}`\n\n"
        + sampling
        + f"review report: `{Path(batch.batch_dir) / REPORT}`"
    )
