"""The HTML review report in a real browser: headless Chromium renders it from disk, and the
screenshot shows the contact sheet pixel for pixel.

Needs the Debian package `chromium` (`apt-get install -y chromium`); without it these tests fail
with that instruction rather than skip.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aigc_core.images import contact_sheet, png_bytes
from aigc_core.report import ReportItem, write_report
from tests.conftest import tiny_images

ROOT = Path(__file__).parents[3]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is missing: apt-get update && apt-get install -y chromium")
    return exe


def screenshot(html: Path, out: Path, profile: Path, size: str = "1280,900") -> np.ndarray:
    cmd = [
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={size}",
        f"--screenshot={out}",
        html.as_uri(),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and out.exists(), p.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB"))


def find(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, int] | None:
    """Top-left (y, x) where `needle` appears exactly in `haystack`, else None."""
    h, w = needle.shape[:2]
    first = needle[0].tobytes()
    for y in range(haystack.shape[0] - h + 1):
        row = haystack[y].tobytes()
        start = row.find(first)
        while start != -1:
            if start % 3 == 0:
                x = start // 3
                if x + w <= haystack.shape[1] and np.array_equal(
                    haystack[y : y + h, x : x + w], needle
                ):
                    return y, x
            start = row.find(first, start + 1)
    return None


def test_report_renders_in_headless_chromium_with_the_contact_sheet(tmp_path):
    data = tiny_images(n=48, seed=4)
    u8 = np.clip(np.rint(data.pixels[:, 0] * 255), 0, 255).astype(np.uint8)
    kept = [i % 4 != 0 for i in range(len(u8))]
    sheet = contact_sheet(
        u8[np.array(kept)], captions=[str(int(k)) for k in data.labels[np.array(kept)]], scale=2
    )
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    items = [
        ReportItem(
            id=f"item-{i}",
            kept=k,
            reasons=[] if k else ["duplicate"],
            scores={"conf": 0.9},
            png=png_bytes(u8[i]),
        )
        for i, k in enumerate(kept)
    ]
    report = write_report(
        tmp_path / "report.html",
        "Content batch test",
        {"batch_id": "test", "n_generated": len(items)},
        items,
        sheets={"kept": buf.getvalue()},
    )
    shot = screenshot(report, tmp_path / "shot.png", tmp_path / "profile")
    assert shot.shape == (900, 1280, 3)
    at = find(shot, np.asarray(sheet.convert("RGB")))
    assert at is not None, "the contact sheet is not visible in the screenshot"
    assert at[0] < 400  # near the top: the kept tab is open by default


def dump_dom(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran, as headless Chromium serializes it."""
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "</html>" in p.stdout, p.stderr[-2000:]
    return p.stdout


def rejected_cards(dom: str) -> list[tuple[str, bool]]:
    """(item id, shown) of the rejected tab's cards, in page order."""
    start = dom.index('id="cards-rejected"')
    found = re.findall(r'<div class="card image"([^>]*)>.*?<div class="id">([^<]*)<', dom[start:])
    return [(item_id, "hidden" not in attrs) for attrs, item_id in found]


def test_rejected_items_filter_and_sort_by_reason_in_chromium(tmp_path):
    """The inline script runs in a real browser, offline: a fragment such as
    `#reason=duplicate&sort=score:conf:desc` opens the rejected tab filtered and sorted."""
    reasons = [["duplicate"], ["low_confidence<0.9"], ["low_confidence<0.9", "duplicate"]] * 3
    conf = [0.42, 0.11, 0.93, 0.57, 0.35, 0.08, 0.71, 0.64, 0.29]
    img = png_bytes(np.zeros((8, 8), np.uint8))
    items = [ReportItem(id="kept-0", kept=True, scores={"conf": 0.99}, png=img)]
    items += [
        ReportItem(id=f"r{i}", kept=False, reasons=r, scores={"conf": c, "label": "7"}, png=img)
        for i, (r, c) in enumerate(zip(reasons, conf, strict=True))
    ]
    report = write_report(tmp_path / "report.html", "filters", {}, items)
    profile = tmp_path / "profile"

    dom = dump_dom(report.as_uri(), profile)  # no fragment: all shown, batch order, kept tab
    assert rejected_cards(dom) == [(f"r{i}", True) for i in range(9)]
    assert 'id="controls-rejected" hidden' not in dom  # the script showed the controls
    assert "9 of 9 cards shown" in dom and re.search(r'id="tab-kept"[^>]* checked', dom)

    dom = dump_dom(report.as_uri() + "#reason=duplicate&sort=score:conf:desc", profile)
    duplicates = [i for i, r in enumerate(reasons) if "duplicate" in r]
    by_conf = sorted(duplicates, key=lambda i: -conf[i])
    others = [i for i in range(9) if i not in duplicates]
    assert [c for c, shown in rejected_cards(dom) if shown] == [f"r{i}" for i in by_conf]
    assert {c for c, shown in rejected_cards(dom) if not shown} == {f"r{i}" for i in others}
    assert f"{len(duplicates)} of 9 cards shown" in dom
    assert re.search(r'id="tab-rejected"[^>]* checked', dom)
    assert not re.search(r'id="tab-kept"[^>]* checked', dom)

    dom = dump_dom(report.as_uri() + "#sort=reason", profile)  # every reason, by reason
    key = {f"r{i}": (";".join(r), i) for i, r in enumerate(reasons)}
    assert [c for c, _ in rejected_cards(dom)] == sorted(key, key=key.get)
    assert all(shown for _, shown in rejected_cards(dom))


@pytest.mark.slow
def test_aigc_generate_writes_a_report_that_chromium_renders(tmp_path):
    """`aigc run` makes a champion; `aigc generate` makes a sharded batch; Chromium shows it."""
    home = tmp_path / "home"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AIGC_"))
    }

    def aigc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "aigc", *args, "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=ROOT,
        )

    p = aigc("run", "--preset", "smoke", "--n", "16", "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    model = json.loads(p.stdout)["model_name"]
    p = aigc("generate", "--model", model, "--n", "96", "--shards", "3", "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)  # stdout is exactly one JSON object
    assert summary["n_generated"] == 96 and summary["shards"] == 3
    for noise in ("Traceback", "telemetry", "CancelledError"):
        assert noise not in p.stderr, p.stderr
    report = Path(summary["report"])
    shot = screenshot(report, tmp_path / "batch.png", tmp_path / "profile", size="1280,1400")
    sheet = Image.open(report.parent / "contact_sheet.png").convert("RGB")
    assert find(shot, np.asarray(sheet)) is not None, "contact sheet not visible"
    page = report.read_text()
    assert "<a " not in page  # embedded mode: a SQLite store, no MLflow UI to link to
    assert re.search(r"label [0-9] · conf", page)  # the digits' class names
    # a model reference that is not there is a clear message and exit 2, not a traceback
    p = aigc("generate", "--model", f"{model}@nope", "--n", "4")
    assert p.returncode == 2 and "has no alias 'nope'" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
