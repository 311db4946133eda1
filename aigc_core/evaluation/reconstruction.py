"""VAE reconstructions for review: held-out images through the encoder's mean and the decoder
(a conditional VAE's both given each image's own label)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aigc_core.data.snapshot import image_arrays
from aigc_core.images import contact_sheet, to_uint8
from aigc_core.models.vae import VAE, VAEConfig
from aigc_core.training.checkpoint import load_latest

RECONSTRUCTED = 32  # held-out images shown beside their reconstructions


@torch.no_grad()
def reconstruct(vae: VAE, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] (with their labels (N,) for a conditional VAE) -> their
    reconstructions at the posterior mean, same shape. Deterministic: no sampling of the
    latent."""
    vae.eval()
    y = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
    mu, _ = vae.encoder(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), y)
    return torch.sigmoid(vae.decoder.logits(mu, y)).numpy()  # (N, C, H, W)


def side_by_side(images: np.ndarray, recon: np.ndarray, per_row: int = 8) -> np.ndarray:
    """Interleave rows of originals and reconstructions: row 2k holds originals, row 2k+1 the
    reconstructions of the same images, for a contact sheet with `per_row` columns."""
    if images.shape != recon.shape:
        raise ValueError(f"{images.shape} originals but {recon.shape} reconstructions")
    n = len(images) - len(images) % per_row
    if n == 0:
        raise ValueError(f"need at least {per_row} images, got {len(images)}")
    a = images[:n].reshape(n // per_row, per_row, *images.shape[1:])
    b = recon[:n].reshape(n // per_row, per_row, *images.shape[1:])
    return np.stack([a, b], axis=1).reshape(n * 2, *images.shape[1:])


def reconstructions_image(
    checkpoint_dir: Path, table, model_config: Callable[[dict], VAEConfig]
) -> Image.Image:
    """A contact sheet of the first held-out images of a snapshot's table beside their
    reconstructions, by the full VAE of the last checkpoint in `checkpoint_dir` (a served model
    is the decoder alone)."""
    latest = load_latest(checkpoint_dir)
    if latest is None:
        raise ValueError(f"evaluate: no VAE checkpoint in {checkpoint_dir} to reconstruct with")
    state = latest[1]
    vae = VAE(model_config(state["config"]["model"]))
    vae.load_state_dict(state["modules"]["model"])
    x_va, y_va = image_arrays(table, "validation")
    x, y = x_va[:RECONSTRUCTED], y_va[:RECONSTRUCTED] if vae.cfg.num_classes else None
    pairs = side_by_side(x, reconstruct(vae, x, y))
    return contact_sheet(to_uint8(pairs), cols=8, scale=3)
