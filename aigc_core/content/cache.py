"""What content batches reuse: the model's files on local disk, and per-process objects.

A batch reads its model from a local folder, `content/.models/<name>-<version>-<run id>/`
(weights and config), downloaded once per home and published atomically, so shards on any
worker that shares the home load it without asking the registry. The run id in the name keeps a
re-created model (same name and version, new run) from reusing an old model's files.

Within one process, what shards share (the generator, the evaluator, the training images,
n-grams or clips' mel vectors) is loaded once under a lock: Dask workers run several shards in turn.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from aigc_core import families, names
from aigc_core.atomic import staged_dir
from aigc_core.models.io import CONFIG, WEIGHTS
from aigc_core.paths import Home
from aigc_core.stages import ModelVersion

MODELS = ".models"  # under the home's content folder

_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()


def cached(key: tuple, load: Callable[[], object]):
    """`load()` once per process for `key`; later calls get the same object."""
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load()
        return _cache[key]


def generator(family: str, folder: str | Path):
    """The generator of the model files in `folder` (a `family` model), loaded once per
    process."""
    folder = Path(folder)
    return cached(
        ("generator", family, str(folder)),
        lambda: families.get(family).load_generator(folder / WEIGHTS, folder / CONFIG),
    )


def model_dir(home: Home, version: ModelVersion) -> Path:
    """Where the model files of `version` are kept in `home` (inside its content folder)."""
    name = f"{version.name}-{version.version}" + (f"-{version.run_id}" if version.run_id else "")
    return names.inside(home.content, home.content / MODELS / name)


def model_files(home: Home, version: ModelVersion, download: Callable[[str, Path], Path]) -> Path:
    """The local folder holding `version`'s weights and config, downloaded once.

    `download(model_uri, dst)` fetches the logged model under `dst` and returns the folder that
    holds its files; they are moved into a staging folder renamed into place when complete, so
    a killed download leaves nothing that looks finished."""
    final = model_dir(home, version)
    if (final / WEIGHTS).is_file() and (final / CONFIG).is_file():
        return final
    uri = f"models:/{version.name}/{version.version}"
    try:
        with staged_dir(final) as tmp:
            (tmp / "download").mkdir()
            src = Path(download(uri, tmp / "download"))
            for f in (WEIGHTS, CONFIG):
                if not (src / f).is_file():
                    raise FileNotFoundError(
                        f"model {version.name} version {version.version} ({uri}) has no {f}: "
                        "it was not logged by this pipeline; register it through the nightly "
                        "pipeline"
                    )
                os.replace(src / f, tmp / f)
            shutil.rmtree(tmp / "download", ignore_errors=True)
    except FileExistsError:
        pass  # downloaded concurrently by another run: use theirs
    return final
