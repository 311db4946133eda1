import json

import numpy as np
import pytest

from aigc_core.curation.decisions import rejected_by_reason
from aigc_core.curation.images import curate_images
from aigc_core.curation.policy import ImagePolicy


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


# --- near-duplicates, memorization, policy files ------------------------------------------------

from aigc_core.curation.images import (  # noqa: E402
    decide_images,
    duplicate_of,
    nearest_distance,
    phash,
    score_images,
)
from aigc_core.curation.policy import Policy, PolicyError, load_policy  # noqa: E402
from tests.conftest import tiny_images  # noqa: E402


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def test_planted_near_duplicate_and_training_copy_are_rejected_good_items_kept():
    data = tiny_images(n=40, seed=1)
    train = data.pixels[:30]  # (30, 1, 28, 28) "training set"
    fresh = tiny_images(n=10, seed=2).pixels  # not in the training set
    gen = _u8(fresh[:, 0])  # (10, 28, 28)
    gen[4] = np.clip(gen[1].astype(int) + 3, 0, 255).astype(np.uint8)  # near-copy of item 1
    gen[7] = _u8(train[12, 0])  # a copy of training image 12
    probs = np.full((10, 10), 0.001)
    probs[:, 3] = 0.99
    df = decide_images(score_images(gen, probs, train), ImagePolicy())
    assert df.loc[4, "reason"] == "duplicate" and df.loc[4, "duplicate_of"] == 1
    assert df.loc[7, "reason"] == "memorized<0.02" and df.loc[7, "train_distance"] < 0.01
    assert df.loc[7, "nearest_train"] == 12
    assert df["kept"].tolist() == [i not in (4, 7) for i in range(10)]
    # distinct items of the same class are neither duplicates nor memorized
    assert (df.loc[df["kept"], "train_distance"] > 0.02).all()
    assert rejected_by_reason(df["reason"]) == {"duplicate": 1, "memorized<0.02": 1}


def test_phash_is_stable_under_small_noise_and_differs_between_classes():
    x = _u8(tiny_images(n=10, seed=3).pixels[:, 0])
    noisy = np.clip(x.astype(int) + np.random.default_rng(0).integers(-4, 5, x.shape), 0, 255)
    h, hn = phash(x), phash(noisy.astype(np.uint8))
    assert h.dtype == np.uint64 and h.shape == (10,)
    same = np.bitwise_count(h ^ hn)  # each image against its noisy copy
    between = np.bitwise_count(h[:, None] ^ h[None, :])[~np.eye(10, dtype=bool)]
    assert same.max() < between.min()  # noise moves a hash less than a change of class


def test_duplicate_of_points_to_the_earliest_close_item():
    h = np.array([0b0, 0b1, 0b111, 0b0], dtype=np.uint64)
    assert duplicate_of(h, 0).tolist() == [-1, -1, -1, 0]
    assert duplicate_of(h, 1).tolist() == [-1, 0, -1, 0]
    assert duplicate_of(h, 3, chunk=1).tolist() == [-1, 0, 0, 0]


def test_nearest_distance_is_rms_in_unit_range():
    train = np.zeros((2, 1, 2, 2), np.float32)
    train[1] = 1.0
    d, rows = nearest_distance(
        np.array([[[255, 255], [255, 255]], [[0, 0], [0, 255]]], np.uint8), train
    )
    assert rows.tolist() == [1, 0]
    assert d.tolist() == pytest.approx([0.0, 0.5])
    with pytest.raises(ValueError, match="pixels"):
        nearest_distance(np.zeros((1, 3, 3), np.uint8), train)


def test_memorization_without_training_scores_is_an_error():
    scores = score_images(np.zeros((2, 4, 4), np.uint8), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="min_train_distance"):
        decide_images(scores, ImagePolicy())


def test_policy_files_yaml_and_json(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text(
        "image:\n  min_confidence: 0.5\n  min_train_distance: null\ntext:\n  blocklist: [foo]\n"
    )
    p = load_policy(y)
    assert p.image.min_confidence == 0.5 and p.image.min_train_distance is None
    assert p.text.blocklist == ("foo",) and p.image.max_duplicate_bits == 2  # default kept
    j = tmp_path / "p.json"
    j.write_text(json.dumps(p.to_dict()))
    assert load_policy(j) == p
    assert load_policy(None) == Policy()
    bad = tmp_path / "bad.yaml"
    bad.write_text("image:\n  min_confidense: 0.5\n")
    with pytest.raises(PolicyError, match="min_confidense.*known: max_duplicate_bits"):
        load_policy(bad)
    bad.write_text("image:\n  min_confidence: 2\n")
    with pytest.raises(PolicyError, match=r"bad.yaml: image.min_confidence: .* to 1 \(got 2\)"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="must end in"):
        load_policy(tmp_path / "p.toml")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")


def test_policy_values_are_checked_and_yaml_numbers_read_as_yaml_1_2(tmp_path):
    y = tmp_path / "p.yaml"
    # 2e-2 is a string in YAML 1.1 (PyYAML's default): a threshold must not become one
    y.write_text("image:\n  min_train_distance: 2e-2\n  max_duplicate_bits: null\ntext: null\n")
    p = load_policy(y)
    assert p.image.min_train_distance == 0.02 and p.image.max_duplicate_bits is None
    assert p.text == Policy().text  # an empty section keeps the defaults
    for text, match in (
        ("image:\n  max_duplicate_bits: 65\n", r"image.max_duplicate_bits: .* to 64 \(got 65\)"),
        ("image:\n  max_duplicate_bits: 2.5\n", r"image.max_duplicate_bits: .*valid integer"),
        ("image:\n  min_confidence: yes\n", r"image.min_confidence: .*valid number"),
        ("text:\n  pii: [ssn]\n", r"text.pii.0: Input should be 'email', 'phone'"),
        ("text:\n  min_words: 9\n  max_words: 3\n", r"text: min_words \(9\) is more than"),
        ("video:\n  fps: 3\n", r"unknown section\(s\) \['video'\]"),
        ("image: [0.5]\n", r"section image must be a mapping"),
        ("- image\n", r"expected a mapping"),
    ):
        y.write_text(text)
        with pytest.raises(PolicyError, match=match):
            load_policy(y)


def test_policy_json_schema_describes_the_file():
    schema = Policy.json_schema()
    image = schema["$defs"]["ImagePolicy"]
    assert image["additionalProperties"] is False  # a typo is an error in an editor too
    conf = image["properties"]["min_confidence"]
    assert {"maximum": 1, "minimum": 0, "type": "number"} in conf["anyOf"]
    assert {"type": "null"} in conf["anyOf"] and conf["default"] == 0.9
    assert "top-class probability" in conf["description"]
    pii = schema["$defs"]["TextPolicy"]["properties"]["pii"]
    assert pii["items"]["enum"] == ["email", "phone", "ipv4", "credit_card"]
    assert set(schema["properties"]) == {"image", "text", "audio"}
