"""Audio curation: every clip kept or rejected with all its reasons (silence, clipping, DC
offset, low confidence, wrong class, near-duplicates, copies of training clips), replayable from
the stored scores under another policy."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from aigc_core.curation.audio import (
    AudioPolicy,
    curate_audio,
    decide_audio,
    mel_vectors,
    score_audio,
)
from aigc_core.curation.decisions import rejected_by_reason

SR, L = 8000, 4096


def tone(f: float, amp: float = 0.5, phase: float = 0.0, partials=(1,)) -> np.ndarray:
    t = np.arange(L) / SR
    x = sum(np.sin(2 * np.pi * k * f * t + phase) / k for k in partials)
    return (amp * x / np.abs(x).max()).astype(np.float32)


def probs_of(labels, confidence=0.95, k=4) -> np.ndarray:
    p = np.full((len(labels), k), (1 - confidence) / (k - 1), dtype=np.float32)
    p[np.arange(len(labels)), labels] = confidence
    return p


def test_each_fault_is_rejected_with_its_reason():
    good = tone(440)
    silent = np.zeros(L, np.float32)
    clipped = np.clip(tone(330) * 4, -1, 1)
    dc = tone(550, amp=0.4) + 0.2
    unsure = tone(660)
    batch = np.stack([good, silent, clipped, dc, unsure])
    p = probs_of([0, 1, 2, 3, 0])
    p[4] = [0.4, 0.3, 0.2, 0.1]
    out = curate_audio(batch, p, AudioPolicy(), SR)
    assert out["kept"].tolist() == [True, False, False, False, False]
    assert out["reason"][0] == ""
    assert "silent>0.5" in out["reason"][1]
    assert out["reason"][2] == "clipped>0.001"
    assert out["reason"][3] == "dc_offset>0.05"
    assert out["reason"][4] == "low_confidence<0.9"
    assert out["silence_fraction"][1] == 1 and out["peak"][1] == 0
    assert rejected_by_reason(out["reason"])["clipped>0.001"] == 1


def test_near_duplicates_are_found_across_phase_but_not_across_pitch():
    # the same note at another start phase and level is the same sound; a semitone up is not
    a = tone(440, partials=(1, 2, 3))
    same = tone(440, amp=0.3, phase=1.0, partials=(1, 2, 3))
    semitone = tone(440 * 2 ** (1 / 12), partials=(1, 2, 3))
    other_timbre = tone(440, partials=(1, 3, 5, 7))
    out = curate_audio(
        np.stack([a, semitone, same, other_timbre]), probs_of([0] * 4), AudioPolicy(), SR
    )
    assert out["duplicate_of"].tolist() == [-1, -1, 0, -1]
    assert out["reason"].tolist() == ["", "", "duplicate", ""]


def test_copies_of_training_clips_are_memorized():
    train = np.stack([tone(f, partials=(1, 2)) for f in (300, 400, 500)])
    fresh = tone(350, partials=(1, 2))
    copy = train[1] + np.float32(1e-4) * np.random.default_rng(0).standard_normal(L).astype(
        np.float32
    )
    out = curate_audio(np.stack([fresh, copy]), probs_of([0, 1]), AudioPolicy(), SR, train=train)
    assert out["nearest_train"][1] == 1 and out["train_similarity"][1] > 0.999
    assert out["train_similarity"][0] < 0.998
    assert out["reason"].tolist() == ["", "memorized>0.998"]


def test_wrong_class_and_replay_under_another_policy():
    batch = np.stack([tone(300), tone(600), np.zeros(L, np.float32)])
    scores = score_audio(batch, probs_of([1, 2, 3]), SR)
    scores["requested_label"] = [1.0, 1.0, None]
    strict = decide_audio(scores, AudioPolicy(max_train_similarity=None))
    assert strict["reason"].tolist()[:2] == ["", "wrong_class"]
    assert strict["reason"][2].startswith("silent")
    lax = decide_audio(
        scores,
        AudioPolicy(
            max_silence_fraction=None, require_requested_class=False, max_train_similarity=None
        ),
    )
    assert lax["kept"].all()
    with pytest.raises(ValueError, match="train_similarity"):
        decide_audio(scores, AudioPolicy())  # memorization asked, never scored


def test_mel_vectors_are_unit_length_and_level_invariant():
    v = mel_vectors(np.stack([tone(440, 0.5), tone(440, 0.05)]), SR)
    assert v.shape == (2, 64 * 64)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert float(v[0] @ v[1]) > 0.999


def test_policy_is_checked():
    with pytest.raises(ValidationError):
        AudioPolicy(min_confidence=1.5)
    with pytest.raises(ValidationError):
        AudioPolicy(max_duplicate_bits=300)
    with pytest.raises(ValidationError, match="max_silence"):
        AudioPolicy(max_silence=0.3)  # a typo must fail
    assert AudioPolicy(min_confidence=None).to_dict()["min_confidence"] is None
