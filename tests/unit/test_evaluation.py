import numpy as np
import pytest
import torch

from aigc_core.evaluation.classifier import ClassifierConfig, train_classifier
from aigc_core.evaluation.fid import fid
from tests.conftest import tiny_images


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(500, 8))
    assert fid(f, f) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_a_mean_shift_is_the_squared_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    b = a + np.array([3.0, 0, 0, 0])  # same covariance, mean moved by 3
    assert fid(a, b) == pytest.approx(9.0, rel=1e-6)


def test_fid_grows_with_distance():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(1000, 4)), rng.normal(size=(1000, 4))
    assert fid(a, b) < fid(a, b + 1.0) < fid(a, b * 3 + 1.0)


def test_fid_needs_two_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        fid(np.zeros((1, 3)), np.zeros((5, 3)))


def test_classifier_learns_a_separable_task():
    data = tiny_images(n=200, classes=4)  # bars 6 rows apart: the +-2 pixel shifts keep them apart
    x, y = torch.from_numpy(data.pixels), torch.from_numpy(data.labels)
    cfg = ClassifierConfig(num_classes=4, width=8, feature_dim=16)
    model, acc = train_classifier(x[:160], y[:160], x[160:], y[160:], cfg, epochs=20)
    assert acc >= 0.9
    feats, probs = model.embed(x[:10])
    assert feats.shape == (10, 16) and probs.shape == (10, 4)
    assert np.allclose(probs.sum(1), 1.0)


def test_classifier_refuses_labels_out_of_range():
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match="labels must lie in"):
        train_classifier(
            x,
            torch.tensor([0, 1, 2, 12]),
            x,
            torch.tensor([0, 1, 2, 3]),
            ClassifierConfig(width=4, feature_dim=8),
            epochs=1,
        )
