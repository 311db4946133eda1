"""Text cards of the HTML review report: the prompt highlighted before the generated text."""

from __future__ import annotations

from aigc_core.report import ReportItem, render_report


def test_text_cards_show_the_prompt_the_text_scores_and_reasons():
    items = [
        ReportItem(
            id="a", kept=True, scores={"ppl": 3.25, "finish": "stop"}, prompt="Once <", text="x"
        ),
        ReportItem(id="b", kept=False, reasons=["near_duplicate", "pii_email"], text="no prompt"),
    ]
    html = render_report("t", {"sampling": {"top_k": 5}}, items)
    assert '<pre><b class="prompt">Once &lt;</b>x</pre>' in html
    assert "<pre>no prompt</pre>" in html  # a new document: no prompt shown
    assert "ppl 3.25 · finish stop" in html
    assert html.count('<span class="reason">') == 2 and html.count('class="card text"') == 2
