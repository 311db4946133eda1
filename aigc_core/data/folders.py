"""Image folders: PNG and JPEG files, class subfolders as optional labels.

Every image is decoded fully (a truncated file fails here, not in training), converted to the
chosen mode (grayscale `L` or `RGB`), center-cropped to a square and resized. Pillow's
decompression-bomb limit stays on, and its warning above the limit is treated as an error.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from aigc_core import progress
from aigc_core.data.files import DataSourceError, walk_files

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MODES = {"L": 1, "RGB": 3}


def decode_image(path: Path, mode: str, size: int) -> np.ndarray:
    """One image file -> uint8 (H, W) or (H, W, 3) at `size` x `size` in `mode`."""
    if path.stat().st_size == 0:
        raise DataSourceError(f"{path}: the file is empty (0 bytes); remove it or replace it")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone turned off Pillow's truncation check
        raise DataSourceError(
            f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process, so truncated "
            f"images would load as half images; turn it off before ingesting"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.format not in ("PNG", "JPEG"):
                    raise DataSourceError(
                        f"{path}: a {im.format} image; only PNG and JPEG are read, convert it"
                    )
                im.load()
                if im.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale
                    arr = np.asarray(im, dtype=np.float64)
                    im = Image.fromarray(np.uint8(np.clip(arr / 257.0, 0, 255)))
                if im.mode in ("P", "PA", "LA", "RGBA"):  # palettes and alpha: over white
                    rgba = im.convert("RGBA")
                    im = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                im = ImageOps.fit(im.convert(mode), (size, size), Image.Resampling.BICUBIC)
                return np.asarray(im, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataSourceError(
            f"{path}: refused as a possible decompression bomb ({e}); shrink the image"
        ) from None
    except UnidentifiedImageError:
        raise DataSourceError(
            f"{path}: not a PNG or JPEG image (Pillow cannot identify it); remove or replace it"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataSourceError(
            f"{path}: the image is truncated or corrupt ({e}); remove or replace it"
        ) from None


def scan_folder(
    root: Path,
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
    what: str = "images",
    hint: str = "no PNG or JPEG files found; an image folder holds *.png / *.jpg files",
) -> tuple[list[Path], list[int], list[str]]:
    """Files with one of `suffixes`, their label indices and the label names. Files directly in
    `root` are unlabeled (label 0, name `unlabeled`); files in subfolders take the subfolder as
    class. Shared by image and audio folders (`what` and `hint` word the errors)."""
    files = walk_files(root, suffixes)
    if not files:
        raise DataSourceError(f"{root}: {hint}, optionally in one subfolder per class")
    rel = [f.relative_to(root) for f in files]
    top = [r for r in rel if len(r.parts) == 1]
    if top and len(top) != len(rel):
        raise DataSourceError(
            f"{root}: mixes {what} at the top level (e.g. {top[0]}) with {what} in class "
            f"subfolders; put every file in a class subfolder, or none"
        )
    if top:
        return files, [0] * len(files), ["unlabeled"]
    names = sorted({r.parts[0] for r in rel})
    index = {n: i for i, n in enumerate(names)}
    return files, [index[r.parts[0]] for r in rel], names


def load_image_folder(root: Path, image_size: int = 28, mode: str = "L"):
    """An `ImageData` (uint8 pixels) from a folder of PNG/JPEG files."""
    from aigc_core.data.sources import ImageData

    if mode not in MODES:
        raise DataSourceError(f"unknown image mode {mode!r}; choose L (grayscale) or RGB")
    root = Path(root)
    files, labels, names = scan_folder(root)
    c = MODES[mode]
    pixels = np.empty((len(files), c, image_size, image_size), dtype=np.uint8)
    for i, f in enumerate(files):
        arr = decode_image(f, mode, image_size)
        pixels[i] = arr[None] if c == 1 else arr.transpose(2, 0, 1)
        if i % 256 == 0:
            progress.report("read images", i, len(files))
    progress.report("read images", len(files), len(files))
    log.info("read %d images in %d classes from %s", len(files), len(names), root)
    return ImageData(
        pixels=pixels,
        labels=np.asarray(labels, dtype=np.int64),
        label_names=names,
        source=f"image folder {root.resolve()}",
        params={
            "image_size": image_size,
            "mode": mode,
            "resize": "center-crop + bicubic",
            "alpha": "composited over white",
        },
    )
