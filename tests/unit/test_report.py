"""The static HTML review report: self-contained, escaped, kept and rejected tabs."""

from __future__ import annotations

import base64
import re

import numpy as np

from aigc_core.images import contact_sheet, png_bytes
from aigc_core.report import ReportItem, render_report, write_report


def items(n: int = 6) -> list[ReportItem]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.integers(0, 255, (8, 8), dtype=np.uint8)
        kept = i % 3 != 0
        out.append(
            ReportItem(
                id=f"b-{i}",
                kept=kept,
                reasons=[] if kept else ["low_confidence<0.9", "duplicate"],
                scores={"conf": 0.5 + i / 20},
                png=png_bytes(img),
            )
        )
    return out


def test_report_has_tabs_cards_sheets_and_no_external_resources(tmp_path):
    sheet = contact_sheet(np.zeros((4, 8, 8), np.uint8))
    path = tmp_path / "r.html"
    sheet.save(tmp_path / "s.png")
    sheet_png = (tmp_path / "s.png").read_bytes()
    write_report(
        path, "Batch <x>", {"n": 6, "policy": {"a": 1}}, items(), sheets={"kept": sheet_png}
    )
    html = path.read_text()
    assert "Kept (4)" in html and "Rejected (2)" in html
    assert html.count('class="card image"') == 6
    assert html.count('<span class="reason">') == 4  # two reasons on each rejected item
    assert "Batch &lt;x&gt;" in html and "<x>" not in html  # escaped
    assert "&quot;a&quot;: 1" in html  # dict summaries shown as JSON
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # opens offline
    assert "<script" not in html
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 7  # one contact sheet and six thumbnails
    assert base64.b64decode(uris[0]) == sheet_png


def test_text_cards_and_card_limit():
    texts = [ReportItem(id=f"t{i}", kept=True, text=f"line <{i}>") for i in range(5)]
    html = render_report("t", {}, texts, max_cards=2)
    assert html.count('class="card text"') == 2 and "first 2 of 5" in html
    assert "line &lt;0&gt;" in html
    assert "No rejected items." in html
    assert 'id="tab-kept" checked' in html


def test_the_rejected_tab_opens_when_nothing_was_kept():
    html = render_report("t", {}, [ReportItem(id="a", kept=False, reasons=["duplicate"])])
    assert 'id="tab-rejected" checked' in html and 'id="tab-kept">' in html
