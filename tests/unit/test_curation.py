import numpy as np
import pytest

from aigc_core.curation.images import ImagePolicy, curate_images


def test_low_confidence_and_duplicates_are_rejected_with_reasons():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(4, 28, 28), dtype=np.uint8)
    imgs[3] = imgs[0]  # an exact duplicate of item 0
    probs = np.full((4, 10), 0.01)
    probs[[0, 1, 3], [7, 2, 7]] = 0.91  # confident
    probs[2, 5] = 0.5  # unsure
    df = curate_images(imgs, probs, ImagePolicy(min_confidence=0.9))
    assert df["kept"].tolist() == [True, True, False, False]
    assert df.loc[2, "reason"] == "low_confidence<0.9"
    assert df.loc[3, "reason"] == "duplicate"
    assert df["predicted_label"].tolist() == [7, 2, 5, 7]


def test_all_reasons_are_kept():
    img = np.zeros((2, 4, 4), dtype=np.uint8)
    probs = np.full((2, 2), 0.5)
    df = curate_images(img, probs, ImagePolicy(min_confidence=0.9))
    assert df.loc[1, "reason"] == "low_confidence<0.9;duplicate"


def test_policy_and_shape_errors():
    with pytest.raises(ValueError, match="min_confidence"):
        ImagePolicy(min_confidence=1.5)
    with pytest.raises(ValueError, match="3 images but 2"):
        curate_images(np.zeros((3, 2, 2), np.uint8), np.ones((2, 2)), ImagePolicy())
