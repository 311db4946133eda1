"""Content batches: a curated batch of items from a registered model, shard by shard.

A batch is planned once (`plan.make_plan`: model version and family, shard seeds, the policy;
for text the prompts and sampling options, checked against the model), then each shard
generates and scores its items and writes one Parquet part atomically under
`content/.work/<batch-id>/` (`shard.run_shard`); a rerun skips the shards whose part is there
and readable. Publishing reads every part, applies the batch-wide decisions (near-duplicates
across shards) and writes `content/<batch-id>/` in one rename: Parquet parts, manifest, contact
sheet and an HTML review report (`publish.curate`, `publish.publish`). The batch id is derived
from everything that determines the content (model version, n, shards, seed, policy, and
when given the classes asked of a conditional image model and its generation options), so a
rerun finds the published batch instead of a second one.

Images, text and audio share this path; the batch's kind (its family's) decides what a shard
generates and scores, the batch-wide decision and the report's cards. Audio items are mono
16-bit PCM WAV files (`wav`), scored a shard at a time for silence, clipping, DC offset, the
snapshot's audio evaluator (confidence, predicted class) and the nearest training clip, with a
mel SimHash per clip for the batch-wide near-duplicate decision; their report cards hold a
player and a spectrogram. Text items are continuations of
the prompts of a prompt file (item i gets prompt i mod P) or, without one, new documents; each
item has its own seed, derived from its shard's, so it can be regenerated alone. Text shards
score each item under the generating model (perplexity) and against the model's training text
(long n-gram overlap), which they read from the snapshot the model version names.

Nothing here talks to a registry or a tracker: the caller resolves the model version, provides
its files (`cache.model_files`), and logs what `publish` computes (`run_tags`, `run_params`,
`run_metrics`, `Batch.artifacts`).
"""

from aigc_core.content.cache import model_files
from aigc_core.content.manifest import Batch
from aigc_core.content.plan import DEFAULT_SHARD_SIZE, BatchPlan, family_of, make_plan
from aigc_core.content.publish import (
    Curated,
    curate,
    publish,
    published,
    reason_rows,
    run_metrics,
    run_name,
    run_params,
    run_tags,
    summary_markdown,
)
from aigc_core.content.shard import ShardResult, run_shard

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "Batch",
    "BatchPlan",
    "Curated",
    "ShardResult",
    "curate",
    "family_of",
    "make_plan",
    "model_files",
    "publish",
    "published",
    "reason_rows",
    "run_metrics",
    "run_name",
    "run_params",
    "run_shard",
    "run_tags",
    "summary_markdown",
]
