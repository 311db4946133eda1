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
