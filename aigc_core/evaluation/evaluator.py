"""The per-snapshot evaluator classifier: trained once on a snapshot's images, then reused.

Image families are scored in its feature space (FID, precision/recall, class diversity), and
image content batches use its confidence. It is stored under `<home>/evaluators/<snapshot_id>/`
as a saved model (weights + config, family "classifier") beside `metrics.json` (its held-out
accuracy and split sizes). It is not a model family: it is never trained by `aigc train`,
registered or served. The audio evaluator (`aigc_core.evaluation.audio_eval`) is stored the same
way, by `stored_evaluator`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from aigc_core.atomic import staged_dir
from aigc_core.data.snapshot import find_snapshot, image_arrays, read_table
from aigc_core.evaluation.classifier import Classifier, ClassifierConfig, train_classifier
from aigc_core.models.io import (
    CONFIG,
    WEIGHTS,
    config_fields,
    load_weights,
    read_config,
    save_model,
)
from aigc_core.paths import Home

METRICS = "metrics.json"

E = TypeVar("E", bound=torch.nn.Module)


def load_or_train_evaluator(home: Home, snapshot_id: str) -> tuple[Classifier, dict]:
    """The snapshot's evaluator classifier and its metrics, trained once and reused by
    snapshot id (the snapshot is read only when it must be trained)."""

    def snapshot():
        snap = find_snapshot(home.datasets, snapshot_id)
        return read_table(snap), snap.manifest

    return evaluator_in(home.evaluators / snapshot_id, snapshot)


def evaluator_in(
    folder: Path, snapshot: Callable[[], tuple[Any, Mapping[str, Any]]]
) -> tuple[Classifier, dict]:
    """The evaluator stored in `folder`, trained there first when it is not: `snapshot()` gives
    the snapshot's (table, manifest) to train on. Runs training at the same time is safe: the
    first to finish stores it, the others use theirs."""

    def train() -> tuple[Classifier, dict, dict]:
        table, manifest = snapshot()
        x_tr, y_tr = image_arrays(table, "train")
        x_va, y_va = image_arrays(table, "validation")
        c, s = x_tr.shape[1], x_tr.shape[2]
        cfg = ClassifierConfig(num_classes=len(manifest["label_set"]), channels=c, image_size=s)
        model, acc = train_classifier(
            torch.from_numpy(x_tr),
            torch.from_numpy(y_tr),
            torch.from_numpy(x_va),
            torch.from_numpy(y_va),
            cfg,
        )
        metrics = {"accuracy": acc, "validation_images": len(x_va), "train_images": len(x_tr)}
        return model, cfg.to_dict(), metrics

    return stored_evaluator(folder, train, load_classifier)


def stored_evaluator(
    folder: Path,
    train: Callable[[], tuple[torch.nn.Module, dict, dict]],
    load: Callable[[Path], E],
) -> tuple[E, dict]:
    """(`load(folder)`, its metrics) of the evaluator stored in `folder`
    (`<evaluators>/<snapshot_id>`), stored there first when it is not: `train()` gives (model,
    its config dict, its metrics) and is called only then. Runs training at the same time is
    safe: the first to finish stores it, the others use theirs. The image and the audio
    evaluators are stored this way."""
    folder = Path(folder)
    if not (folder / METRICS).exists():
        model, config, metrics = train()
        try:
            with staged_dir(folder) as tmp:
                save_model(tmp, model, config)
                (tmp / METRICS).write_text(json.dumps(metrics))
        except FileExistsError:
            pass  # trained concurrently by another run: use theirs
    return load(folder), json.loads((folder / METRICS).read_text())


def load_classifier(folder: Path, device: str | torch.device = "cpu") -> Classifier:
    """A saved evaluator classifier (eval mode)."""
    cfg = ClassifierConfig(**config_fields(read_config(Path(folder) / CONFIG)))
    return load_weights(Classifier(cfg), Path(folder) / WEIGHTS, device)
