"""The contract of a model family: everything the pipeline knows of one kind of generative model.

A `Family` is a frozen record of plain values and functions; one file per family builds one (see
`dcgan.py` for a GAN, `charlstm.py` for a language model). The pipeline asks the family object
and never its name: which snapshots it trains on (`kind`), its presets, how to build its training
job from typed configs, which module is saved and served, how to load a generator from saved
files, how to evaluate it, the promotion policy's metrics, the pyfunc's input example and params
(its request options, with their defaults), which curation its content gets (`kind`), and how
a trained model is compressed (`compression`: the method and how much worse than its parent the
compressed model may score, `aigc_core.compression`; None: it is not). A
separate package adds a family through the entry-point group `aigc.families` (see
`aigc_core.families`): nothing in this project changes.

Generators are plain classes (no MLflow): image kind `generate(n, seed, batch_size=256,
on_batch=None, labels=None, **options) -> (n, C, H, W) float32 in [0, 1]` with `num_classes`
(0: unconditional; else `labels` (n,) asks item i for class labels[i]; `options` are the
family's generation options, e.g. a diffusion model's `guidance`, `sampling_steps`); text
kind `generate(prompts, max_new_tokens, seed, temperature=1.0, top_k=None, top_p=None,
stop=()) -> [(text, finish_reason)]`, `score(prompts, texts) -> [mean nats per char]`,
`context_ids(prompt)`, `stop_ids(stop)`; audio kind `generate(n, seed, batch_size=64,
on_batch=None, labels=None) -> (n, L) float32 in [-1, 1]` with `num_classes` (as for images),
`sample_rate` (Hz) and `length` (samples per clip, L); all three
`predict(request: DataFrame, params: dict | None = None) -> DataFrame`, which the served pyfunc
model calls (`params`: the request's options, those of `Family.params_example`): images as
base64 PNG rows, texts as rows of text, audio as base64 WAV rows (mono 16-bit PCM at
`sample_rate`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from aigc_core.compression import Compression
from aigc_core.kinds import KINDS
from aigc_core.promotion import GatePolicy

log = logging.getLogger(__name__)


class Preset(NamedTuple):
    """A named starting point: the model's config and its training config (typed dataclasses
    with `to_dict()`; the model config's dict carries "family", which saved models are loaded
    by; every train config has `steps`, `total_steps` and `checkpoint_every`). The built-in
    ones are pydantic dataclasses that check their values (`aigc_core.config_types`); a config
    file and `--set` items override their fields (`aigc_core.settings`), which a plugin's plain
    dataclasses support too."""

    model: Any
    train: Any


@dataclass
class TrainData:
    """What a family trains on: images (N, C, H, W) in [0, 1] with their class labels (N,)
    int64 in [0, num_classes) (an image snapshot always has them: a folder without class
    subfolders is one class), or text, or audio clips (N, 1, L) as int16 PCM, every clip L
    samples at `sample_rate` Hz, with class labels as for images. Clips stay int16 (half the
    memory of float32): a trainer scales them by 1/32768 into [-1, 1]
    (`aigc_core.training.wavegan.clips_tensor` does it for int16 (N, L) arrays; float32 clips
    already in [-1, 1] are accepted as they are). A conditional family reads `labels` and
    `num_classes`."""

    images: torch.Tensor | None = None
    val_images: torch.Tensor | None = None
    text: str | None = None
    val_text: str | None = None
    audio: torch.Tensor | None = None  # (N, 1, L) int16 PCM (or float32 in [-1, 1])
    val_audio: torch.Tensor | None = None
    sample_rate: int = 0  # Hz of the audio clips; 0: no audio
    labels: torch.Tensor | None = None  # (N,) int64, aligned with images or audio
    val_labels: torch.Tensor | None = None
    num_classes: int = 0  # the snapshot's label set's size; 0: no labels

    def need(self, what: str, family: str):
        """The images, text or audio a family trains on; an error naming the snapshot's lack."""
        value = getattr(self, what)
        if value is None:
            raise ValueError(f"the {family} family trains on {what}; this snapshot has none")
        return value


@dataclass(frozen=True)
class EvalInputs:
    """What evaluating a trained model may read. `table` holds the snapshot's rows with a
    `split` column (train/validation); `final` the training run's last logged metrics."""

    model_dir: Path  # weights.safetensors + config.json of the served module
    checkpoint_dir: Path  # the run's checkpoints (the full model, e.g. the VAE's encoder)
    snapshot_id: str
    table: Any  # pyarrow.Table
    manifest: Mapping[str, Any]
    evaluators_dir: Path  # per-snapshot evaluator classifiers, trained once, shared
    final: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """A family's scores of one model: metrics (the policy's among them), images to log beside
    them (artifact file name -> PIL image), a one-line summary for the log, and tables (e.g.
    sample texts: artifact file name -> rows) that MLflow shows as tables."""

    metrics: Mapping[str, float]
    images: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    tables: Mapping[str, list[dict]] = field(default_factory=dict)  # artifact file -> rows


def classes_if_labelled(model_cfg, data: TrainData, family: str) -> int:
    """`num_classes` of a model that is class-conditional when its config's `conditional` is on
    and the data has two classes or more (the diffusion and wavegan families): the snapshot's
    classes, or 0 (unconditional; said in the log when it was asked for conditional). A warm
    start's classes (its config's `num_classes`) must be the snapshot's."""
    k = data.num_classes if model_cfg.conditional else 0
    if 0 < k < 2:
        log.info("the snapshot has 1 class: training an unconditional %s model", family)
        k = 0
    elif model_cfg.conditional and k == 0:
        log.info("the snapshot has no labels: training an unconditional %s model", family)
    if model_cfg.num_classes and model_cfg.num_classes != k:
        raise ValueError(
            f"the {family} model was trained on {model_cfg.num_classes} classes, this snapshot "
            f"has {data.num_classes}: warm-start it on a snapshot with the same classes"
        )
    return k


class Generator(Protocol):
    def predict(self, request: Any, params: Mapping[str, Any] | None = None) -> Any: ...


def _same(model_cfg, data: TrainData):
    return model_cfg


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "image", "text" or "audio": the snapshots it trains on, its content, curation
    presets: Mapping[str, Preset]
    model_config: Callable[[dict], Any]  # a saved model config dict -> the model config
    train_config: Callable[[dict], Any]  # a checkpoint's train config dict -> the train config
    build_job: Callable[[Any, Any, TrainData, torch.device], Any]  # (model, train, data, device)
    served_module: Callable[[Any], nn.Module]  # the job's part saved, served and warm-started
    load_generator: Callable[..., Generator]  # (weights: Path, config: Path, device="cpu")
    evaluate: Callable[[EvalInputs], Evaluation]
    policy: GatePolicy  # the promotion gate: primary metric, direction, floors
    input_example: Mapping[str, list]  # one pyfunc request, column -> values
    # the pyfunc's params, name -> default (MLflow fills in those a request leaves out); the
    # signature's params schema is inferred from it; empty: the model takes none
    params_example: Mapping[str, Any] = field(default_factory=dict)
    final_metrics: Mapping[str, str] = field(default_factory=dict)  # run field -> logged metric
    prepare: Callable[[Any, TrainData], Any] = _same  # data-dependent config (a vocabulary)
    description: str = ""
    compression: Compression | None = None  # how a trained model is compressed; None: it is not

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"family {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if not self.presets:
            raise ValueError(f"family {self.name!r} has no presets")

    @property
    def curation(self) -> str:
        """Which curation its content gets: the kind's."""
        return self.kind

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ValueError(
                f"unknown preset {name!r} for {self.name}; choose one of {', '.join(self.presets)}"
            )
        return Preset(*self.presets[name])

    def to_dict(self) -> dict:
        """What `aigc families --json` prints. `params`: the names of its request options (the
        keys of `params_example`), which `aigc generate` checks its options against;
        `compression`: its compression method's name, or None."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "primary_metric": self.policy.metric,
            "lower_is_better": self.policy.lower_is_better,
            "params": list(self.params_example),
            "compression": self.compression.method if self.compression else None,
            "presets": {
                name: {"model": p.model.to_dict(), "train": _plain(p.train)}
                for name, p in self.presets.items()
            },
        }


def _plain(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)
