"""Image sources. Each returns an `ImageData`: float32 pixels in [0, 1], shape (N, C, H, W).

Built-in:
- `digits`: scikit-learn's copy of the UCI optical handwritten digits (1,797 8x8 images with
  values 0..16), upscaled to 28x28 grayscale so they match MNIST-sized models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


@dataclass
class ImageData:
    pixels: np.ndarray  # (N, C, H, W) float32 in [0, 1]
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


IMAGE_SOURCES = {"digits": load_digits}


def load_image_source(name: str, **kwargs) -> ImageData:
    try:
        loader = IMAGE_SOURCES[name]
    except KeyError:
        raise ValueError(
            f"unknown image dataset {name!r}; built-in datasets: {', '.join(sorted(IMAGE_SOURCES))}"
        ) from None
    return loader(**kwargs)
