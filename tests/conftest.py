"""Shared fixtures. Settings that keep test output clean and offline are set before any
library is imported."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # every test uses its own home's SQLite store

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigc_core.data.sources import ImageData  # noqa: E402


def tiny_images(n: int = 120, size: int = 28, seed: int = 0, classes: int = 10) -> ImageData:
    """Synthetic labelled images: class k is a bright bar at a class-specific row, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    x = rng.uniform(0, 0.2, size=(n, 1, size, size)).astype(np.float32)
    for i, k in enumerate(labels):
        r = 2 + (k * (size - 4)) // classes
        x[i, 0, r : r + 2, 2:-2] = 1.0
    return ImageData(
        pixels=x,
        labels=labels.astype(np.int64),
        label_names=[str(i) for i in range(classes)],
        source="tests.tiny_images",
        params={"seed": seed, "n": n},
    )


@pytest.fixture
def home(tmp_path):
    from aigc_core.paths import Home

    return Home(tmp_path / "aigc-home").ensure()


@pytest.fixture
def mlflow_registry(monkeypatch):
    """`mlflow_registry(uri)` points MLflow's fluent API (`mlflow.pyfunc.load_model("models:/...")`)
    at a store for one test. `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which a
    later test's `Tracker` would take for a user's tracking server; the URIs and the variables
    are restored when the test ends."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    monkeypatch.setattr(tracking, "_tracking_uri", tracking._tracking_uri)
    monkeypatch.setattr(registry, "_registry_uri", registry._registry_uri)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        # setenv records the value (or its absence, which delenv alone would not) for the undo
        monkeypatch.setenv(var, os.environ.get(var, ""))

    def point(uri: str) -> None:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)

    return point
