"""Audio cards of the review report: a player with the clip's WAV and its spectrogram, inlined as
data: URIs; spectrograms drawn only for the cards the report shows. (Chromium plays them in
tests/integration/e2e/test_report_audio.py.)"""

from __future__ import annotations

import base64
import html as htmllib
import io
import re

import numpy as np
import pyarrow as pa
import soundfile
from PIL import Image

from aigc_core.audio import spectrogram_png, to_pcm16, to_wav_bytes
from aigc_core.content.publish import audio_report
from aigc_core.report import ReportItem, render_report

SR, L = 8000, 1024


def tone(hz: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(L) / SR)).astype(np.float32)


def table(n: int, kept: list[bool], requested: list[int | None] | None = None) -> pa.Table:
    return pa.table(
        {
            "id": [f"clip-{i}" for i in range(n)],
            "wav": pa.array([to_wav_bytes(tone(200.0 + 50 * i), SR) for i in range(n)]),
            "sample_rate": pa.array([SR] * n, pa.int32()),
            "predicted_label": pa.array([1] * n, pa.int16()),
            "confidence": pa.array([0.5] * n, pa.float32()),
            "silence_fraction": pa.array([0.25] * n, pa.float32()),
            "clipping_fraction": pa.array([0.0] * n, pa.float32()),
            "dc_offset": pa.array([0.01] * n, pa.float32()),
            "train_similarity": pa.array([0.9] * n, pa.float32()),
            "requested_label": pa.array(requested or [None] * n, pa.int16()),
            "kept": kept,
            "reason": ["" if k else "silent>0.5" for k in kept],
        }
    )


def test_audio_cards_hold_a_player_with_the_wav_and_the_spectrogram():
    wav = to_wav_bytes(tone(440.0), SR)
    png = spectrogram_png(tone(440.0), SR)
    items = [
        ReportItem(id='clip<"0">', kept=True, scores={"conf": 0.95}, wav=wav, png=png),
        ReportItem(id="clip-1", kept=False, reasons=["silent>0.5"], wav=wav, png=png),
    ]
    page = render_report("audio", {}, items)
    cards = re.findall(r'<div class="card (\w+)"', page)
    assert cards == ["audio", "audio"]
    sources = re.findall(
        r'<audio controls preload="metadata" src="data:audio/wav;base64,([^"]+)"', page
    )
    assert len(sources) == 2 and base64.b64decode(sources[0]) == wav
    clip, rate = soundfile.read(io.BytesIO(base64.b64decode(sources[0])), dtype="float32")
    assert rate == SR and len(clip) == L
    pics = re.findall(
        r'<img alt="spectrogram of ([^"]+)" src="data:image/png;base64,([^"]+)"', page
    )
    assert [htmllib.unescape(a) for a, _ in pics] == ['clip<"0">', "clip-1"]
    assert base64.b64decode(pics[0][1]) == png
    assert 'clip<"0">' not in page  # escaped
    assert not re.search(r"(src|href)=\"https?:", page)  # nothing from the network


def test_audio_report_names_classes_and_draws_only_the_cards_shown():
    kept = [True] * 5 + [False] * 3
    items, sheets = audio_report(table(8, kept, [0] * 8), ["low", "high"], max_cards=2)
    assert sheets == {} and [i.kept for i in items] == kept
    drawn = [i.id for i in items if i.png is not None]
    assert drawn == ["clip-0", "clip-1", "clip-5", "clip-6"]  # the first 2 of each tab
    assert [i.id for i in items if i.wav is not None] == drawn  # only theirs leave the table
    assert items[5].wav == to_wav_bytes(tone(200.0 + 50 * 5), SR)
    first = items[0]
    assert first.scores["label"] == "high" and first.scores["asked"] == "low"
    assert first.scores["silence"] == 0.25 and items[5].reasons == ["silent>0.5"]
    pic = Image.open(io.BytesIO(first.png))
    assert pic.size == (192, 96)  # the spectrogram at its own size: 2:1, 96 px high
    # the picture is of the clip the player plays (its 16-bit samples), and each card its own
    assert first.png == spectrogram_png(to_pcm16(tone(200.0)), SR) != items[1].png


def test_unconditional_audio_cards_do_not_show_a_class_asked():
    items, _ = audio_report(table(2, [True, True]), None)
    assert "asked" not in items[0].scores and items[0].scores["label"] == "1"
