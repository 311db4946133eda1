"""Image folders: class subfolders as labels, every mode and size converted per the contract."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aigc_core.data.files import DataSourceError
from aigc_core.data.folders import load_image_folder
from aigc_core.data.ingest import prepare
from data_contracts import validate_snapshot


def save(path, mode="L", size=(20, 20), value=128, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":  # a palette image with an exact gray entry
        im = Image.new("RGB", size, (value,) * 3).quantize(256)
    else:
        im = Image.new(
            mode, size, {"L": value, "RGB": (value, 0, 0), "RGBA": (value, 0, 0, 255)}[mode]
        )
    im.save(path, format=fmt)
    return path


def test_class_subfolders_become_labels(tmp_path):
    for i in range(3):
        save(tmp_path / "cat" / f"{i}.png", value=10)
        save(tmp_path / "dog" / f"{i}.jpg", value=200)
    data = load_image_folder(tmp_path, image_size=8)
    assert data.label_names == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.pixels.shape == (6, 1, 8, 8) and data.pixels.dtype == np.uint8  # no float copy
    assert (data.pixels[:3] == 10).all()
    assert np.abs(data.pixels[3:].astype(int) - 200).max() <= 2  # JPEG is lossy


def test_mixed_modes_and_sizes_are_converted_to_one_shape_that_validates(tmp_path):
    modes = [("L", (30, 20)), ("RGB", (16, 16)), ("RGBA", (40, 64)), ("P", (9, 33))]
    i = 0
    for cls in ("a", "b"):
        for j, (mode, size) in enumerate(modes):
            for k in range(3):
                save(tmp_path / cls / f"{j}-{k}.png", mode, size, value=5 + 7 * i)  # distinct
                i += 1
    for mode, channels in (("L", 1), ("RGB", 3)):
        p = prepare("shop", path=tmp_path, image_size=12, mode=mode)
        assert p.extra["image_shape"] == [channels, 12, 12]
        report = validate_snapshot(p.table, p.manifest_preview())
        assert report.success


def test_alpha_is_composited_over_white(tmp_path):
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    im.save(tmp_path / "clear.png")
    data = load_image_folder(tmp_path, image_size=4, mode="L")
    assert (data.pixels == 255).all()


def test_images_at_the_top_level_are_unlabeled(tmp_path):
    for i in range(4):
        save(tmp_path / f"{i}.png", value=i * 50)
    data = load_image_folder(tmp_path, image_size=6)
    assert data.label_names == ["unlabeled"] and set(data.labels.tolist()) == {0}


def test_top_level_images_mixed_with_class_folders_are_refused(tmp_path):
    save(tmp_path / "x.png")
    save(tmp_path / "cls" / "y.png")
    with pytest.raises(DataSourceError, match="mixes images at the top level"):
        load_image_folder(tmp_path)


def test_unknown_mode_is_refused(tmp_path):
    save(tmp_path / "x.png")
    with pytest.raises(DataSourceError, match="unknown image mode 'CMYK'"):
        load_image_folder(tmp_path, mode="CMYK")
