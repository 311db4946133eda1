"""Image sources. Each returns an `ImageData`, pixels of shape (N, C, H, W) as the source has
them: uint8 0..255 (IDX files, image folders: no float copy is made) or float in [0, 1] (digits,
and anything resized). Snapshots store uint8 (`snapshot.image_table` quantizes floats).

Built-in (`IMAGE_SOURCES`):
- `digits`: scikit-learn's copy of the UCI optical handwritten digits (1,797 8x8 images with
  values 0..16), upscaled to 28x28 grayscale so they match MNIST-sized models.
- `mnist`, `fashion-mnist`: the standard IDX files (train and t10k, 70,000 28x28 images),
  downloaded into `cache_dir` with their published MD5s verified, or read from `path`.

Any other name with a `path`: a folder of MNIST-format IDX files, an IDX images file, or an image
folder (PNG/JPEG, class subfolders as labels) converted to `mode` (L or RGB) at `image_size`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aigc_core.data import idx
from aigc_core.data.files import DataSourceError, require_exists
from aigc_core.data.folders import load_image_folder

log = logging.getLogger(__name__)


@dataclass
class ImageData:
    pixels: np.ndarray  # (N, C, H, W) uint8 0..255, or float in [0, 1]
    labels: np.ndarray  # (N,) int64
    label_names: list[str]
    source: str
    params: dict = field(default_factory=dict)


def resize_images(pixels: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of (N, C, H, W) float images in [0, 1], antialiased, clipped to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    y = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return y.clamp_(0.0, 1.0).numpy()


def load_digits(image_size: int = 28) -> ImageData:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    raw = bunch.images.astype(np.float32) / 16.0  # (N, 8, 8), values 0..16 -> [0, 1]
    pixels = resize_images(raw[:, None], image_size)
    return ImageData(
        pixels=pixels,
        labels=bunch.target.astype(np.int64),
        label_names=[str(i) for i in range(10)],
        source="sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)",
        params={"image_size": image_size, "resize": "bicubic-antialias", "scale": "x/16"},
    )


def _from_uint8(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (N, H, W) -> (N, 1, S, S): the uint8 values themselves (a view) at their own size,
    else float32 in [0, 1] resized to S."""
    if images.shape[1:] == (image_size, image_size):
        return images[:, None]
    return resize_images(images[:, None].astype(np.float32) / np.float32(255.0), image_size)


def load_idx(
    path: Path, image_size: int = 28, label_names: list[str] | None = None, source: str = ""
) -> ImageData:
    """MNIST-format IDX files at `path` (a folder with train-*/t10k-* files, or one images file)."""
    names = label_names or [str(i) for i in range(10)]
    pairs = idx.idx_pairs(Path(path))
    images, labels = idx.load_idx_pairs(pairs, num_classes=len(names))
    log.info("read %d IDX images from %s", len(images), path)
    return ImageData(
        pixels=_from_uint8(images, image_size),
        labels=labels,
        label_names=names,
        source=source or f"IDX files {', '.join(str(p.resolve()) for pair in pairs for p in pair)}",
        params={"image_size": image_size, "format": "idx"},
    )


def _idx_dataset(dataset: str):
    def load(
        path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        image_size: int = 28,
    ) -> ImageData:
        mirror = idx.MIRRORS[dataset]
        if path is None:
            if cache_dir is None:
                raise DataSourceError(
                    f"{dataset}: give --path to a folder with its IDX files, or a download folder"
                )
            path = idx.fetch(dataset, Path(cache_dir))
            source = f"{dataset} ({mirror.urls[0]}, MD5-verified)"
        else:
            source = ""
        return load_idx(Path(path), image_size, list(mirror.classes), source)

    load.__name__ = f"load_{dataset.replace('-', '_')}"
    return load


def load_path(path: str | Path, image_size: int = 28, mode: str = "L", **_) -> ImageData:
    """Images from a user path: IDX files, or a folder of PNG/JPEG images."""
    p = require_exists(Path(path))
    is_idx = "idx3" in p.name or (
        p.is_dir() and any("idx3-ubyte" in q.name for q in p.iterdir() if q.is_file())
    )
    if is_idx:
        return load_idx(p, image_size)
    return load_image_folder(p, image_size=image_size, mode=mode)


IMAGE_SOURCES = {
    "digits": load_digits,
    "mnist": _idx_dataset("mnist"),
    "fashion-mnist": _idx_dataset("fashion-mnist"),
}


def load_image_source(name: str, path: str | Path | None = None, **kwargs) -> ImageData:
    """A built-in dataset by name (with `path`: its files from there), or the images at `path`."""
    loader = IMAGE_SOURCES.get(name)
    if loader is None:
        if path is None:
            raise DataSourceError(
                f"unknown image dataset {name!r}; built-in datasets: "
                f"{', '.join(sorted(IMAGE_SOURCES))}, or give --path to your own images"
            )
        return load_path(path, **kwargs)
    if path is not None:
        kwargs["path"] = path
    return loader(**kwargs)
