"""Text cards of the HTML review report: the prompt highlighted before the generated text."""

from __future__ import annotations

import re

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


def test_rejected_texts_sort_by_their_numeric_scores_and_filter_by_reason():
    items = [
        ReportItem(
            id=f"t{i}",
            kept=False,
            reasons=[reason],
            scores={"ppl": ppl, "words": 12, "finish": "stop"},
            text="x",
        )
        for i, (reason, ppl) in enumerate([("near_duplicate", 3.5), ("pii_email", 9.25)])
    ]
    html = render_report("t", {}, items)
    options = re.findall(r'<option value="([^"]*)">([^<]*)<', html)
    assert [v for v, _ in options] == [
        "",
        "reason",
        "score:ppl:asc",
        "score:ppl:desc",
        "score:words:asc",
        "score:words:desc",
    ]  # "finish" is not a number
    assert ("score:ppl:desc", "ppl, highest first") in options
    assert 'value="near_duplicate" checked> near_duplicate <span class="count">(1)' in html
    assert 'value="pii_email" checked> pii_email <span class="count">(1)' in html
