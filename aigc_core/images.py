"""Image encoding helpers (Pillow): PNG bytes and contact sheets. No model code here."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W[, C]) uint8, rounding to nearest."""
    x = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    x = x.transpose(0, 2, 3, 1)
    return x[..., 0] if x.shape[-1] == 1 else x


def png_bytes(image_u8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image_u8).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def contact_sheet(
    images_u8: np.ndarray,
    captions: list[str] | None = None,
    cols: int = 16,
    scale: int = 3,
    pad: int = 2,
    marks: list[bool] | None = None,
) -> Image.Image:
    """A grid of images, upscaled `scale` times, with optional captions under each cell and an
    optional red frame on cells whose mark is False (rejected items)."""
    n = len(images_u8)
    if n == 0:
        raise ValueError("no images for a contact sheet")
    h, w = images_u8.shape[1:3]
    cell_w, cell_h = w * scale + 2 * pad, h * scale + 2 * pad + (12 if captions else 0)
    cols = min(cols, n)
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, img in enumerate(images_u8):
        r, c = divmod(i, cols)
        x0, y0 = c * cell_w, r * cell_h
        tile = Image.fromarray(img).convert("RGB").resize((w * scale, h * scale), Image.NEAREST)
        sheet.paste(tile, (x0 + pad, y0 + pad))
        if marks is not None and not marks[i]:
            draw.rectangle(
                [x0 + 1, y0 + 1, x0 + cell_w - 2, y0 + h * scale + 2 * pad - 2],
                outline=(220, 30, 30),
                width=2,
            )
        if captions:
            draw.text((x0 + pad, y0 + h * scale + pad), captions[i], fill=(40, 40, 40))
    return sheet
