"""Image augmentation (issue 17): shapes, ranges and memory format kept; nothing changes at zero
strength or when off; seeded by (seed, step); every image its own transform; never a flip;
each transform taken with its probability; the presets and `--set train.augment.*`; and image
trainers with augmentation on train, resume exactly, and draw the same batches as without."""

from __future__ import annotations

import dataclasses
import itertools
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from aigc_core import families, settings
from aigc_core.training import engine
from aigc_core.training.augment import (
    AugmentConfig,
    Augmenter,
    affine_matrices,
    augment_images,
    elastic_field,
    step_generator,
)
from aigc_core.training.loop import Interrupted, TrainConfig

CPU = torch.device("cpu")
ON = AugmentConfig(enabled=True, p=1.0)  # the default strengths, on every image
STILL = AugmentConfig(
    enabled=True, p=1.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0, elastic_alpha=0.0
)


def glyph(h: int = 28, w: int = 28) -> torch.Tensor:
    """(1, 1, H, W) in [0, 1]: a blurred "F", asymmetric left-right and top-bottom."""
    x = torch.zeros(1, 1, h, w)
    x[..., 5 : h - 5, 7:11] = 1  # the stem, left of centre
    x[..., 5:9, 7 : w - 6] = 1  # the top bar, full length
    x[..., 12:15, 7 : w - 11] = 1  # the middle bar, shorter
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
    return F.conv2d(x, k, padding=1).clamp(0, 1)


def corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each of a's images (B, ...) with b's (B or 1, ...)."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_shape_range_dtype_and_memory_format_are_kept():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(16, 3, 20, 28, generator=gen) * 2 - 1).contiguous(
        memory_format=torch.channels_last
    )  # a trainer's [-1, 1], not square
    y = augment_images(x, ON, step_generator(0, 1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.min() >= x.min() and y.max() <= x.max()  # interpolation: inside the input's range
    assert not torch.equal(y, x)


def test_nothing_changes_when_off_or_at_zero_strength_or_probability():
    x = glyph().repeat(8, 1, 1, 1)
    assert not STILL.active and not dataclasses.replace(ON, p=0.0).active
    assert not AugmentConfig().active  # off by default
    for cfg in (STILL, dataclasses.replace(ON, p=0.0), dataclasses.replace(ON, enabled=False)):
        assert Augmenter(cfg, seed=0)(x, step=3) is x
    # a zero-strength affine transform is the identity matrix, and sampling with it the image
    theta = affine_matrices(torch.rand(8, 5), torch.ones(8, dtype=torch.bool), STILL, 28, 28)
    assert torch.equal(theta, torch.eye(2, 3).expand(8, 2, 3))
    grid = F.affine_grid(theta, [8, 1, 28, 28], align_corners=False)
    same = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)


def test_seeded_by_seed_and_step_and_different_per_image():
    x = glyph().repeat(32, 1, 1, 1)
    aug = Augmenter(ON, seed=7)
    a, b = aug(x, 5), aug(x, 5)
    assert torch.equal(a, b)  # the same (seed, step): the same images, whatever ran before
    assert not torch.equal(a, aug(x, 6)) and not torch.equal(a, Augmenter(ON, seed=8)(x, 5))
    # 32 copies of one image come out as 32 different images
    flat = a.flatten(1)
    distances = torch.cdist(flat, flat) + torch.eye(32) * 1e9
    assert distances.min() > 0.1


def blobs(h: int = 28, w: int = 28, spots=((8, 8, 4, 1.0), (19, 15, 3, 0.6), (10, 21, 2, 0.3))):
    """(1, 1, H, W): a sum of Gaussian spots (row, column, sigma, height); the default is
    smooth (its correlation survives small moves) and asymmetric both ways."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    img = sum(a * torch.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s**2)) for r, c, s, a in spots)
    return img[None, None]


def test_never_a_flip():
    # the affine part never reflects: a flip is a matrix of negative determinant
    strongest = AugmentConfig(
        enabled=True, p=1.0, degrees=45.0, translate=0.5, scale=0.9, shear=45.0
    )
    u = torch.rand(10_000, 5, generator=torch.Generator().manual_seed(0))
    theta = affine_matrices(u, torch.ones(10_000, dtype=torch.bool), strongest, 28, 20)
    assert torch.linalg.det(theta[:, :, :2]).min() > 0
    # an image stays far closer to itself than to its mirror or upside-down images
    x = blobs()
    batch = augment_images(x.repeat(2000, 1, 1, 1), ON, step_generator(0, 1))
    to_original = corr(batch, x)
    to_flips = torch.maximum(corr(batch, x.flip(-1)), corr(batch, x.flip(-2)))
    assert to_original.mean() > to_flips.mean() + 0.5
    assert (to_original > to_flips).float().mean() > 0.99
    # a spot in the top-left corner stays in the top-left quarter: no flip moves it across
    corner = blobs(spots=((5, 5, 2, 1.0),))
    moved = augment_images(corner.repeat(5000, 1, 1, 1), ON, step_generator(0, 2))
    coords, mass = torch.arange(28.0), moved.sum((1, 2, 3))
    cx = (moved.sum((1, 2)) * coords).sum(1) / mass
    cy = (moved.sum((1, 3)) * coords).sum(1) / mass
    assert cx.max() < 13.5 and cy.max() < 13.5  # the centre; a flip would put it at 22


def test_each_transform_is_taken_with_its_probability():
    x = glyph().repeat(2000, 1, 1, 1)
    half = dataclasses.replace(ON, p=0.5)
    changed = (augment_images(x, half, step_generator(0, 1)) != x).flatten(1).any(1)
    # affine or elastic, each with p = 0.5 independently: 1 - 0.5 ** 2
    assert abs(changed.float().mean().item() - 0.75) < 0.04
    only_affine = dataclasses.replace(half, elastic_alpha=0.0)
    changed = (augment_images(x, only_affine, step_generator(0, 1)) != x).flatten(1).any(1)
    assert abs(changed.float().mean().item() - 0.5) < 0.04


def test_translation_moves_by_at_most_its_range():
    x = torch.zeros(1, 1, 40, 40)
    x[..., 18:22, 18:22] = 1  # a square at the centre
    shift = dataclasses.replace(STILL, translate=0.1)
    y = augment_images(x.repeat(200, 1, 1, 1), shift, step_generator(0, 1))
    coords = torch.arange(40.0)
    mass = y.sum((1, 2, 3))
    cx = (y.sum((1, 2)) * coords).sum(1) / mass - 19.5  # (B,) pixels from the centre
    cy = (y.sum((1, 3)) * coords).sum(1) / mass - 19.5
    assert cx.abs().max() <= 4.01 and cy.abs().max() <= 4.01  # 0.1 of 40 pixels
    assert cx.abs().max() > 3 and cy.std() > 1  # and it does move, both ways


def test_elastic_field_has_unit_spread_everywhere_and_is_smooth():
    f = elastic_field(200, 32, 48, 3.0, torch.Generator().manual_seed(0))  # (B, 2, H, W)
    assert f.shape == (200, 2, 32, 48)
    for part in (f[..., 12:20, 20:28], f[..., :2, :], f[..., :, -2:]):  # centre, edges
        assert 0.9 < part.std().item() < 1.1
    neighbours = corr(f[..., :, :-1].reshape(1, -1), f[..., :, 1:].reshape(1, -1))
    assert neighbours.item() > 0.9  # smooth: a pixel moves with its neighbour


def test_differentiable_and_unchanged_by_autocast():
    x = glyph().repeat(8, 1, 1, 1).requires_grad_(True)
    y = augment_images(x, ON, step_generator(0, 1))
    (y * torch.linspace(-1, 1, 28)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as inside a bf16 training step
        z = augment_images(x.detach(), ON, step_generator(0, 1))
    assert z.dtype == torch.float32 and torch.equal(z, y.detach())  # the grid is not rounded
    half = augment_images(x.detach().bfloat16(), ON, step_generator(0, 1))
    assert half.dtype == torch.bfloat16  # computed in float32, returned in the input's dtype


def test_config_is_checked_and_train_configs_without_it_train_without():
    with pytest.raises(ValueError, match="less than or equal to 1"):
        AugmentConfig(p=2.0)
    with pytest.raises(ValueError):
        AugmentConfig(degrees=90.0)  # a quarter turn changes what a digit is
    assert not Augmenter.of(TrainConfig()).active  # the language models' config has none


@pytest.mark.parametrize("name", ["dcgan", "vae", "diffusion"])
def test_augment_presets_and_settings(name):
    family = families.get(name)
    base, augmented = family.preset("cpu"), family.preset("cpu-augment")
    assert not base.train.augment.enabled and augmented.train.augment.enabled
    assert augmented.model == base.model
    assert dataclasses.replace(augmented.train, augment=base.train.augment) == base.train
    sets = ["train.augment.enabled=true", "train.augment.degrees=5", "train.augment.scale=0"]
    r = settings.resolve(family, "cpu", settings.load_overrides(None, sets))
    assert r.train_cfg.augment == AugmentConfig(enabled=True, degrees=5.0, scale=0.0)
    assert r.flat()["train.augment.enabled"] is True
    with pytest.raises(settings.SettingsError, match="train.augment.flip"):
        settings.resolve(family, "cpu", {"train": {"augment": {"flip": True}}})


def test_a_partial_override_keeps_the_presets_other_augment_settings():
    family = families.get("dcgan")
    r = settings.resolve(
        family, "cpu-augment", settings.load_overrides(None, ["train.augment.p=0.3"])
    )
    assert r.train_cfg.augment == AugmentConfig(enabled=True, p=0.3)


def _pictures() -> torch.Tensor:
    return blobs().repeat(48, 1, 1, 1) * torch.linspace(0.5, 1, 48)[:, None, None, None]


def _run(name, tmp_path, folder, augment=True, stop=None, resume=False):
    overrides = {
        "steps": 4,
        "checkpoint_every": 2,
        "bf16": False,
        "augment": {"enabled": augment, "p": 0.5},
    }
    if name != "dcgan":
        overrides["log_every"] = 2
    return engine.train_model(
        families.get(name),
        "smoke",
        engine.TrainData(images=_pictures(), val_images=_pictures()[:8]),
        CPU,
        tmp_path / folder,
        resume=resume,
        overrides=overrides,
        stop=stop,
    )


def _weights(result) -> list[torch.Tensor]:
    return list(result.family.served_module(result.job).state_dict().values())


@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_training_with_augmentation_resumes_exactly(tmp_path, name):
    full = _run(name, tmp_path, "full")
    assert full.job.augment.active
    calls = itertools.count()
    with pytest.raises(Interrupted) as stopped:  # asked to stop after its 2nd step
        _run(name, tmp_path, "part", stop=lambda: next(calls) >= 1)
    assert stopped.value.step == 2
    resumed = _run(name, tmp_path, "part", resume=True)
    assert resumed.start_step == 2
    for a, b in zip(_weights(full), _weights(resumed), strict=True):
        assert torch.equal(a, b)
    plain = _run(name, tmp_path, "plain", augment=False)
    # augmentation changed what was learned, not which batches were drawn
    assert any(not torch.equal(a, b) for a, b in zip(_weights(full), _weights(plain), strict=True))
    assert torch.equal(full.job.rng.get_state(), plain.job.rng.get_state())
    assert all(torch.isfinite(torch.tensor(v)) for m in full.history for v in m.values())


def test_diffusion_noises_augmented_images():
    family = families.get("diffusion")
    model_cfg, train_cfg = family.preset("smoke")
    data = engine.TrainData(images=_pictures())
    model_cfg = family.prepare(model_cfg, data)
    seen = {}
    for enabled in (False, True):
        augment = AugmentConfig(enabled=enabled, p=0.5)
        job = family.build_job(
            model_cfg, dataclasses.replace(train_cfg, bf16=False, augment=augment), data, CPU
        )
        with mock.patch.object(job, "loss", wraps=job.loss) as loss:
            out = job.train_step(1)["loss"]
        seen[enabled] = (loss.call_args.args[1], out, job.rng.get_state())  # x0, loss, rng
    (x_plain, loss_plain, rng_plain), (x_aug, loss_aug, rng_aug) = seen[False], seen[True]
    assert torch.isfinite(loss_aug) and not torch.equal(loss_aug, loss_plain)
    assert not torch.equal(x_aug, x_plain) and x_aug.min() >= -1 and x_aug.max() <= 1
    assert torch.equal(rng_aug, rng_plain)  # the same batch, noise and timesteps
