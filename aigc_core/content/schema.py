"""What a content batch writes: the Parquet schemas of shard parts and published parts, and the
names of the published files.

A shard part holds the items of one shard and every per-item score (`IMAGE_SHARD_SCHEMA`,
`AUDIO_SHARD_SCHEMA`, or `text_shard_schema(policy)`: the text scores depend on the policy's
n-gram checks). An image or audio item names the class it was asked to be (`requested_label`,
null when the request named none) beside the class the evaluator sees in it
(`predicted_label`). An audio item is a mono 16-bit PCM WAV file (`wav`). A published
part adds the batch-wide decision (`duplicate_of`, `kept`, `reason`) and the lineage of every
item (`LINEAGE`): which batch, model version, run and snapshot it came from.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from aigc_core.curation.policy import TextPolicy

FORMAT_VERSION = 2  # part of every batch id: changing it gives every request a new batch
MANIFEST = "manifest.json"
REPORT = "report.html"
CONTACT_SHEET = "contact_sheet.png"
LINEAGE = ("batch_id", "model_name", "model_version", "run_id", "snapshot_id")

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
        pa.field("requested_label", pa.int16()),  # the class asked (--labels); null: none
        pa.field("predicted_label", pa.int16()),
        pa.field("confidence", pa.float32()),
        pa.field("phash", pa.int64()),
        pa.field("train_distance", pa.float32()),
        pa.field("nearest_train_id", pa.string()),
    ]
)
# What an audio shard writes: the clips as WAV files and every per-clip score
# (`curation.audio.score_audio`).
AUDIO_SHARD_SCHEMA = pa.schema(
    [
        *_ITEM,
        pa.field("seed", pa.int64(), nullable=False),  # the shard's seed
        pa.field("wav", pa.binary(), nullable=False),  # mono 16-bit PCM WAV
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("requested_label", pa.int16()),  # the class asked (--labels); null: none
        pa.field("predicted_label", pa.int16()),
        pa.field("confidence", pa.float32()),
        pa.field("peak", pa.float32()),
        pa.field("silence_fraction", pa.float32()),
        pa.field("clipping_fraction", pa.float32()),
        pa.field("dc_offset", pa.float32()),
        pa.field("fingerprint", pa.string()),  # 256-bit mel SimHash, 64 hex digits
        pa.field("train_similarity", pa.float32()),  # cosine with the nearest training clip
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


def shard_schema(kind: str, policy: Mapping[str, dict]) -> pa.Schema:
    """The shard part's schema of a batch of `kind` under its plan's `policy`."""
    if kind == "text":
        return text_shard_schema(TextPolicy(**policy["text"]))
    return AUDIO_SHARD_SCHEMA if kind == "audio" else IMAGE_SHARD_SCHEMA


def batch_schema(shard: pa.Schema) -> pa.Schema:
    """What the published batch holds: the shard columns, the decision and the lineage."""
    return pa.schema(
        [
            *shard,
            pa.field("duplicate_of", pa.int32(), nullable=False),
            pa.field("kept", pa.bool_(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            *(pa.field(k, pa.string(), nullable=False) for k in LINEAGE),
        ]
    )
