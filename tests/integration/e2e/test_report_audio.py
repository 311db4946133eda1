"""An audio batch's review report in a real browser: headless Chromium decodes every card's WAV
(its `<audio>` player reports the clip's duration) and draws its spectrogram pixel for pixel.

Needs the Debian package `chromium`, as `test_report.py` does.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from aigc_core.audio import to_wav_bytes
from aigc_core.content.publish import audio_report
from aigc_core.report import write_report
from tests.integration.e2e.test_report import CHROMIUM_FLAGS, chromium, find, screenshot

SR, L = 8000, 4096  # the built-in notes' rate and length: 0.512 s

# Appended to a copy of the report: each player marks its element with the duration the
# browser decoded, or with its error code.
PROBE = """<script>
document.querySelectorAll("audio").forEach(function (a) {
  function mark() { a.setAttribute("data-duration", String(a.duration)); }
  if (a.readyState >= 1) mark(); else a.addEventListener("loadedmetadata", mark);
  a.addEventListener("error", function () {
    a.setAttribute("data-error", String(a.error && a.error.code));
  });
});
</script>"""


def tone(hz: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(L) / SR)).astype(np.float32)


def batch_table(wavs: list[bytes]) -> pa.Table:
    """What `audio_report` reads of a published audio batch: one kept clip, then rejected."""
    n = len(wavs)
    return pa.table(
        {
            "id": [f"clip-{i}" for i in range(n)],
            "wav": pa.array(wavs, pa.binary()),
            "sample_rate": pa.array([SR] * n, pa.int32()),
            "predicted_label": pa.array([i % 2 for i in range(n)], pa.int16()),
            "confidence": pa.array([0.95] + [0.4] * (n - 1), pa.float32()),
            "silence_fraction": pa.array([0.0] * n, pa.float32()),
            "clipping_fraction": pa.array([0.0] * n, pa.float32()),
            "dc_offset": pa.array([0.0] * n, pa.float32()),
            "train_similarity": pa.array([0.9] * n, pa.float32()),
            "requested_label": pa.nulls(n, pa.int16()),
            "kept": [True] + [False] * (n - 1),
            "reason": [""] + ["low_confidence<0.9"] * (n - 1),
        }
    )


def probed(report: Path, out: Path, profile: Path) -> str:
    """The DOM of `report` with `PROBE` appended, after the players loaded their clips."""
    out.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",  # let media load before the DOM is dumped
        "--dump-dom",
        out.as_uri(),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "</html>" in p.stdout, p.stderr[-2000:]
    return p.stdout


def test_audio_cards_play_and_show_their_spectrograms_in_chromium(tmp_path):
    wavs = [to_wav_bytes(tone(hz), SR) for hz in (440.0, 660.0, 990.0)]
    items, sheets = audio_report(batch_table(wavs), class_names=["a4", "e5"])
    report = write_report(tmp_path / "report.html", "audio batch", {"n": 3}, items, sheets=sheets)

    dom = probed(report, tmp_path / "probe.html", tmp_path / "profile")
    players = re.findall(r"<audio\b[^>]*>", dom)
    assert len(players) == 3
    durations = [re.search(r'data-duration="([^"]+)"', p) for p in players]
    assert all(d is not None for d in durations), players[0][:200]
    assert [float(d.group(1)) for d in durations] == [L / SR] * 3  # 0.512 s, decoded
    assert not any("data-error" in p for p in players)

    # the kept tab is open: its card's spectrogram is on screen at its own size
    shot = screenshot(report, tmp_path / "shot.png", tmp_path / "profile")
    spectrogram = np.asarray(Image.open(io.BytesIO(items[0].png)).convert("RGB"))
    assert spectrogram.shape == (96, 192, 3)
    assert find(shot, spectrogram) is not None, "the kept clip's spectrogram is not visible"


def test_the_probe_sees_a_clip_the_browser_cannot_decode(tmp_path):
    """The check above can fail: a WAV file that is not one gets an error, not a duration."""
    fake = b"RIFF\x24\x00\x00\x00WAVEnot a wav file at all" * 4
    items, _ = audio_report(batch_table([to_wav_bytes(tone(440.0), SR)]), None)
    items[0].wav = fake
    report = write_report(tmp_path / "report.html", "broken", {}, items)
    dom = probed(report, tmp_path / "probe.html", tmp_path / "profile")
    (player,) = re.findall(r"<audio\b[^>]*>", dom)
    assert 'data-error="' in player and "data-duration" not in player
