"""Planning a content batch: everything that determines its content, fixed before any shard.

`make_plan` takes the resolved model version (the registry lookup is the caller's) and returns
a `BatchPlan`: the model's family and kind, per-shard seeds, the frozen policy, and for text the
prompts and sampling options, checked against the model so a bad request fails here and not in
a shard. The batch id is a hash of all of that, so a rerun of the same request finds its
working parts or its published batch instead of making a second one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigc_core import families, names
from aigc_core.atomic import remove_stale_staging
from aigc_core.content import cache
from aigc_core.content.schema import FORMAT_VERSION, LINEAGE
from aigc_core.curation.policy import Policy
from aigc_core.evaluation.evaluator import load_or_train_evaluator
from aigc_core.families.base import Family
from aigc_core.generation.shards import Shard, plan_shards
from aigc_core.generation.text_options import TextSampling, load_prompts
from aigc_core.models.io import CONFIG, read_config
from aigc_core.paths import Home
from aigc_core.stages import ModelVersion

DEFAULT_SHARD_SIZE = 4096  # items per shard when the caller does not choose
KINDS = ("image", "text")  # the kinds a batch is built for: what a shard generates and scores


@dataclass(frozen=True)
class BatchPlan:
    """A planned batch: plain values only, so it travels to Dask workers (pickled).

    `policy` holds the one section of the policy file that applies ({"image": {...}} or
    {"text": {...}}); `sampling`, `prompts` and `prompt_file` are for text batches only."""

    batch_id: str
    kind: str  # "image" or "text": what shards generate and how items are curated
    family: str
    model_ref: str  # as the caller gave it, e.g. aigc-dcgan-digits@champion
    model_name: str
    model_version: str
    model_uri: str
    model_dir: str  # a local folder holding the model's weights and config
    run_id: str  # the training run of the model version
    snapshot_id: str  # the snapshot the model version was trained on
    seed: int
    n: int
    shards: tuple[Shard, ...]
    policy: Mapping[str, Mapping[str, Any]]
    work_dir: str  # shard parts while the batch is being made
    batch_dir: str  # the published batch
    sampling: Mapping[str, Any] | None = None
    prompts: tuple[str, ...] = ()
    prompt_file: str | None = None

    @property
    def lineage(self) -> dict[str, str]:
        """What every published item names: its batch, model version, run and snapshot."""
        return {k: getattr(self, k) for k in LINEAGE}

    def item_prompt(self, index: int) -> str:
        """The prompt of item `index`: the prompts in turn, or empty (a new document)."""
        return self.prompts[index % len(self.prompts)] if self.prompts else ""

    def generator(self):
        """The model's generator, from the plan's local model files (once per process)."""
        return cache.generator(self.family, self.model_dir)


def family_of(version: ModelVersion, model_dir: Callable[[], Path]) -> Family:
    """The family of a registered model version, if a batch can be built from it: its "family"
    tag or, for a version registered before versions had one, the "family" of its saved config
    (in `model_dir()`, the folder holding its files)."""
    name = version.tag("family") or read_config(model_dir() / CONFIG).get("family", "")
    known = families.available()
    family = known.get(name)
    if family is None or family.kind not in KINDS:
        buildable = sorted(n for n, f in known.items() if f.kind in KINDS)
        raise ValueError(
            f"model {version.name} version {version.version} is a {name!r} model; batches are "
            f"built for {', '.join(buildable)}"
        )
    return family


def batch_key_id(key: Mapping[str, Any]) -> str:
    """The batch id of a planning key: 16 hex digits of its canonical JSON's sha256."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def make_plan(
    version: ModelVersion,
    home: Home,
    n: int,
    shards: int | None,
    seed: int,
    *,
    model_ref: str,
    fetch_model: Callable[[], Path],
    policy: Policy | None = None,
    prompt_file: str | None = None,
    sampling: Mapping[str, Any] | None = None,
) -> BatchPlan:
    """Plan a batch of `n` items from `version` in `shards` shards (None: one per 4,096 items).

    `fetch_model()` returns the local folder holding the model's files (see
    `cache.model_files`); it is called at most once, after the request's cheap checks when
    the version names its family. Image batches get their snapshot's evaluator trained here,
    once, rather than raced for by shards on several workers; text batches read the prompt
    file and check the prompts and the sampling options (`TextSampling` fields) against the
    model."""
    fetch_model = functools.cache(fetch_model)  # called at most once
    family = family_of(version, fetch_model)
    kind = family.kind
    if kind == "image" and (prompt_file is not None or sampling):
        given = f"--prompt-file {prompt_file}" if prompt_file else ", ".join(sorted(sampling))
        raise ValueError(
            f"model {version.name} version {version.version} generates images, and prompts and "
            f"sampling options ({given}) apply to text models; drop --prompt-file and the "
            "sampling options"
        )
    snapshot_id = version.tag("snapshot_id")
    if not snapshot_id:
        raise LookupError(
            f"model {version.name} version {version.version} has no snapshot_id tag, so its "
            "items cannot be checked against its training data; register it through the "
            "nightly pipeline"
        )
    remove_stale_staging(home.content)  # batches whose publishing was killed
    policy = policy or Policy()
    k = shards if shards is not None else max(1, -(-n // DEFAULT_SHARD_SIZE))
    planned = tuple(plan_shards(n, k, seed))
    key: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "model": version.name,
        "version": version.version,
        "n": n,
        "shards": k,
        "seed": seed,
    }
    text: dict[str, Any] = {}
    if kind == "image":
        chosen_policy = {"image": policy.image.to_dict()}
        key["policy"] = chosen_policy["image"]  # the key image batches always had
        model_dir = fetch_model()
        load_or_train_evaluator(home, snapshot_id)
    else:
        try:
            chosen = TextSampling(**(sampling or {}))
        except TypeError as e:
            raise ValueError(f"sampling options: {e}") from None
        prompts = load_prompts(prompt_file) if prompt_file is not None else []
        model_dir = fetch_model()
        check_text_request(cache.generator(family.name, model_dir), prompts, chosen, prompt_file)
        chosen_policy = {"text": policy.text.to_dict()}
        text = {"sampling": chosen.to_dict(), "prompts": tuple(prompts), "prompt_file": prompt_file}
        key.update(
            kind="text",
            policy=chosen_policy["text"],
            sampling=text["sampling"],
            prompts=hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
        )
    batch_id = names.batch_id(batch_key_id(key))
    batch_dir = names.inside(home.content, home.content / batch_id)
    return BatchPlan(
        batch_id=batch_id,
        kind=kind,
        family=family.name,
        model_ref=model_ref,
        model_name=version.name,
        model_version=version.version,
        model_uri=f"models:/{version.name}/{version.version}",
        model_dir=str(model_dir),
        run_id=version.run_id,
        snapshot_id=snapshot_id,
        seed=seed,
        n=n,
        shards=planned,
        policy=chosen_policy,
        work_dir=str(home.content / ".work" / batch_id),
        batch_dir=str(batch_dir),
        **text,
    )


def check_text_request(
    generator, prompts: list[str], sampling: TextSampling, prompt_file: str | None
) -> None:
    """Fail at planning, not in a shard: prompts and stop strings the model cannot read."""
    generator.stop_ids(sampling.stop)
    seen: set[str] = set()
    for i, p in enumerate(prompts or [""]):
        if p in seen:
            continue
        seen.add(p)
        try:
            generator.context_ids(p)
        except ValueError as e:
            where = f"prompt {i + 1} of {prompt_file} ({p[:40]!r})" if prompt_file else "prompts"
            raise ValueError(f"{where}: {e}") from None
