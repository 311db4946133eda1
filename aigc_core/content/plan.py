"""Planning a content batch: everything that determines its content, fixed before any shard.

`make_plan` takes the resolved model version (the registry lookup is the caller's) and returns
a `BatchPlan`: the model's family and kind, per-shard seeds, the frozen policy, for text the
prompts and sampling options, for images and audio the classes asked of a conditional model
(`labels`, a pattern: item i asks for `labels[i % len(labels)]`, `aigc_core.generation.labels`),
for images the family's generation options (e.g. a diffusion model's guidance and sampling
steps), for a text VAE's interpolation batch its two sentences (item i of n decodes the point
i / (n - 1) of the way from the first to the second, `LatentPoint`), all checked against the
model so a bad request fails here and not in a shard. The batch id is a hash of all
of that, so a rerun of the same request finds its working parts or its published batch instead
of making a second one; a request without labels or options has the id it always had. The id
hashes only the batch kind's section of the policy, so adding a section (audio) left the ids of
image and text batches as they were.

Audio batches (kind "audio", e.g. a WaveGAN) get their snapshot's audio evaluator trained here,
once (`audio_evaluator`), and their generator's clip length and rate checked against the
snapshot's, so a model that does not fit its snapshot fails here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigc_core import families, names
from aigc_core.atomic import remove_stale_staging
from aigc_core.content import cache
from aigc_core.content.schema import FORMAT_VERSION, LINEAGE
from aigc_core.curation.policy import Policy
from aigc_core.data.snapshot import find_snapshot, read_table
from aigc_core.evaluation.evaluator import load_or_train_evaluator
from aigc_core.families.base import Family
from aigc_core.generation.labels import LabelsError, parse_labels
from aigc_core.generation.shards import Shard, plan_shards
from aigc_core.generation.text_options import LatentPoint, TextSampling, load_prompts
from aigc_core.kinds import KINDS  # a batch is built for every kind
from aigc_core.models.io import CONFIG, read_config
from aigc_core.paths import Home
from aigc_core.stages import ModelVersion

DEFAULT_SHARD_SIZE = 4096  # items per shard when the caller does not choose


@dataclass(frozen=True)
class BatchPlan:
    """A planned batch: plain values only, so it travels to Dask workers (pickled).

    `policy` holds the one section of the policy file that applies ({"image": {...}},
    {"text": {...}} or {"audio": {...}}); `sampling`, `prompts` and `prompt_file` are for text
    batches only, `labels` (the pattern of classes asked; empty: none) for image and audio
    batches, `options` (generation options, keys of the family's `params_example`) for image
    batches (an audio model takes none); `interpolate` (two
    sentences; empty: none) for a text VAE's interpolation batch only."""

    batch_id: str
    kind: str  # "image", "text" or "audio": what shards generate and how items are curated
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
    labels: tuple[int, ...] = ()
    options: Mapping[str, Any] | None = None
    interpolate: tuple[str, ...] = ()

    @property
    def lineage(self) -> dict[str, str]:
        """What every published item names: its batch, model version, run and snapshot."""
        return {k: getattr(self, k) for k in LINEAGE}

    def item_prompt(self, index: int) -> str:
        """The prompt of item `index`: the prompts in turn, or empty (a new document); in an
        interpolation batch, its point on the path (a `LatentPoint`)."""
        if self.interpolate:
            a, b = self.interpolate
            return LatentPoint(a, b, index / max(1, self.n - 1))
        return self.prompts[index % len(self.prompts)] if self.prompts else ""

    def item_label(self, index: int) -> int | None:
        """The class asked of item `index`, or None when the request named none."""
        return self.labels[index % len(self.labels)] if self.labels else None

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
    labels: str | Sequence[int] | None = None,
    options: Mapping[str, Any] | None = None,
    interpolate: Sequence[str] | None = None,
) -> BatchPlan:
    """Plan a batch of `n` items from `version` in `shards` shards (None: one per 4,096 items).

    `fetch_model()` returns the local folder holding the model's files (see
    `cache.model_files`); it is called at most once, after the request's cheap checks when
    the version names its family. Image batches get their snapshot's evaluator trained here,
    once, rather than raced for by shards on several workers, and so do audio batches (the
    audio evaluator, whose clip length and rate the generator's must be); text batches read the
    prompt file and check the prompts and the sampling options (`TextSampling` fields) against
    the model.

    `labels` (images and audio): a spec (`parse_labels`: "7", "3,7", "3:0.7,7:0.3") or a list of
    classes, checked against the model's classes (`num_classes` of its saved config; none:
    unconditional, which takes no labels): `LabelsError`. `options` (images): generation
    options by name, each a key of the family's `params_example` with a value of its type
    (None: the model's default); another name is a ValueError. `interpolate` (text VAEs): two
    sentences; the batch's `n` items are the path between them (`n` >= 2; no prompt file)."""
    fetch_model = functools.cache(fetch_model)  # called at most once
    family = family_of(version, fetch_model)
    kind = family.kind
    model = f"model {version.name} version {version.version}"
    if kind != "text" and (prompt_file is not None or sampling):
        given = f"--prompt-file {prompt_file}" if prompt_file else ", ".join(sorted(sampling))
        raise ValueError(
            f"{model} generates {'images' if kind == 'image' else kind}, and prompts and "
            f"sampling options ({given}) apply to text models; drop --prompt-file and the "
            "sampling options"
        )
    asked_labels = labels is not None and (not isinstance(labels, str) or labels.strip() != "")
    if kind == "text" and (asked_labels or _given(options)):
        given = ", ".join(["--labels"] * asked_labels + [_flag(k) for k in _given(options)])
        raise ValueError(
            f"{model} generates {kind}, and class labels and image generation options "
            f"({given}) apply to image models (labels to audio models too); drop them"
        )
    if interpolate:
        check_interpolation_request(interpolate, n, prompt_file, kind, model)
    chosen_options = check_options(family, options, model) if kind != "text" else {}
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
    drawn: dict[str, Any] = {}  # images and audio: the classes asked, the generation options
    if kind == "image":
        chosen_policy = {"image": policy.image.to_dict()}
        key["policy"] = chosen_policy["image"]  # the key image batches always had
        model_dir = fetch_model()
        pattern = check_labels(labels, model_dir, model)
        if pattern:
            key["labels"] = list(pattern)
        else:  # the class check has nothing to check: the id need not change
            key["policy"] = {k: v for k, v in key["policy"].items() if k != CLASS_SWITCH}
        if chosen_options:
            key["options"] = chosen_options
            check_option_values(cache.generator(family.name, model_dir), chosen_options, model)
        drawn = {"labels": pattern, "options": chosen_options or None}
        load_or_train_evaluator(home, snapshot_id)
    elif kind == "audio":
        chosen_policy = {"audio": policy.audio.to_dict()}
        key.update(kind="audio", policy=chosen_policy["audio"])
        model_dir = fetch_model()
        pattern = check_labels(labels, model_dir, model)
        if pattern:
            key["labels"] = list(pattern)
        if chosen_options:  # none today: an audio family with options would list them
            key["options"] = chosen_options
        generator = cache.generator(family.name, model_dir)
        check_option_values(generator, chosen_options, model)
        check_audio_model(generator, audio_evaluator(home, snapshot_id), model, snapshot_id)
        drawn = {"labels": pattern, "options": chosen_options or None}
    else:
        try:
            chosen = TextSampling(**(sampling or {}))
        except TypeError as e:
            raise ValueError(f"sampling options: {e}") from None
        prompts = load_prompts(prompt_file) if prompt_file is not None else []
        model_dir = fetch_model()
        generator = cache.generator(family.name, model_dir)
        if interpolate:
            check_interpolation_model(generator, family, model)
            prompts = [LatentPoint(*interpolate, t) for t in (0.0, 1.0)]  # checked, not kept
        check_text_request(generator, prompts, chosen, prompt_file)
        prompts = [] if interpolate else prompts
        chosen_policy = {"text": policy.text.to_dict()}
        text = {"sampling": chosen.to_dict(), "prompts": tuple(prompts), "prompt_file": prompt_file}
        key.update(
            kind="text",
            policy=chosen_policy["text"],
            sampling=text["sampling"],
            prompts=hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
        )
        if interpolate:  # only then: other batches keep the ids they always had
            key["interpolate"] = list(interpolate)
            text["interpolate"] = tuple(interpolate)
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
        **drawn,
    )


CLASS_SWITCH = "require_requested_class"  # the image policy's switch that reads `labels`


def audio_evaluator(home: Home, snapshot_id: str):
    """The audio snapshot's evaluator (`evaluation.audio_eval.AudioClassifier`), trained once
    and reused by snapshot id, as `load_or_train_evaluator` is for images; the snapshot is read
    only when it must be trained. Loaded once per process."""
    from aigc_core.evaluation.audio_eval import audio_evaluator_in, splits_of

    def splits():
        snap = find_snapshot(home.datasets, snapshot_id)
        return splits_of(read_table(snap), snap.manifest)

    return cache.cached(
        ("audio-evaluator", str(home.root), snapshot_id),
        lambda: audio_evaluator_in(home.evaluators / snapshot_id, splits)[0],
    )


def check_audio_model(generator, evaluator, model: str, snapshot_id: str) -> None:
    """Fail at planning, not in a shard: clips of another length or rate than the snapshot's
    (which its evaluator and its training clips have) cannot be scored against it."""
    cfg = evaluator.cfg
    if (generator.length, generator.sample_rate) != (cfg.length, cfg.sample_rate):
        raise ValueError(
            f"{model} makes {generator.length} samples at {generator.sample_rate} Hz but its "
            f"snapshot {snapshot_id} holds {cfg.length} at {cfg.sample_rate} Hz: its clips "
            "cannot be curated against that snapshot; register it from the snapshot it was "
            "trained on"
        )


def check_labels(
    labels: str | Sequence[int] | None, model_dir: str | Path, model: str
) -> tuple[int, ...]:
    """The pattern of `labels` for the model saved in `model_dir`: its config's `num_classes`
    (absent or 0: unconditional) bounds the classes. A `LabelsError` names the model."""
    num_classes = int(read_config(Path(model_dir) / CONFIG).get("num_classes") or 0)
    try:
        return parse_labels(labels, num_classes)
    except LabelsError as e:
        raise LabelsError(f"{model}: {e}") from None


def check_options(family: Family, options: Mapping[str, Any] | None, model: str) -> dict:
    """The generation options given (None values left out: the model's defaults), sorted by
    name, each a key of the family's `params_example` (but `labels`, given on its own) with a
    value of its default's type; a ValueError names the option and what the family takes."""
    takes = {k: v for k, v in family.params_example.items() if k != "labels"}
    chosen = {}
    for name, value in sorted(_given(options).items()):
        if name not in takes:
            known = ", ".join(_flag(k) for k in takes)
            raise ValueError(
                f"{model} is a {family.name} model, which takes no {_flag(name)} option "
                + (f"(its generation options: {known})" if known else "(nor any other)")
                + f"; drop {_flag(name)}"
            )
        chosen[name] = _option_value(name, value, takes[name])
    return chosen


def check_option_values(generator, options: Mapping[str, Any], model: str) -> None:
    """Fail at planning, not in a shard: option values out of the model's range, where its
    generator checks them (an `options(**options)` method, as the diffusion generator's)."""
    check = getattr(generator, "options", None)
    if callable(check):
        try:
            check(**options)
        except ValueError as e:
            raise ValueError(f"{model}: {e}") from None


def _option_value(name: str, value: Any, default: Any) -> Any:
    """`value` as the type of the option's default (an int is a float; a bool is neither)."""
    if isinstance(default, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        what, value = "a finite number", float(value) if ok else value
    elif isinstance(default, str):
        ok, what = isinstance(value, str), "a string"
    else:
        ok, what = True, ""
    if not ok:
        raise ValueError(f"{_flag(name)} must be {what}, got {value!r}")
    return value


def _given(options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (options or {}).items() if v is not None}


def _flag(name: str) -> str:
    """The command-line option of a generation option: sampling_steps -> --sampling-steps."""
    return "--" + name.replace("_", "-")


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


def check_interpolation_request(
    interpolate: Sequence[str], n: int, prompt_file: str | None, kind: str, model: str
) -> None:
    """Fail before the model is read: an interpolation asks for two sentences, of a text
    model, a path of at least 2 items, and no prompts."""
    if kind != "text":
        raise ValueError(f"{model} generates {kind}; --interpolate applies to text VAEs: drop it")
    if len(interpolate) != 2 or not all(isinstance(s, str) and s for s in interpolate):
        raise ValueError(f"--interpolate takes two non-empty sentences, got {list(interpolate)!r}")
    if prompt_file is not None:
        raise ValueError(
            "--interpolate decodes the path between its two sentences and takes no prompts: "
            "drop --prompt-file"
        )
    if n < 2:
        raise ValueError(f"--steps must be >= 2 (both ends of the path), got {n}")


def check_interpolation_model(generator, family: Family, model: str) -> None:
    """Only a model with a latent space (a generator with `interpolate`) interpolates."""
    if not callable(getattr(generator, "interpolate", None)):
        raise ValueError(
            f"{model} is a {family.name} model, which has no latent space to interpolate in: "
            "--interpolate needs a text VAE (the textvae family)"
        )
