"""The static HTML review report: self-contained, escaped, kept and rejected tabs, filter and sort
of the rejected items by reason, links to the MLflow UI, why nothing was kept."""

from __future__ import annotations

import base64
import html as htmllib
import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageFont

from aigc_core import content
from aigc_core.content.publish import (
    SHEET_PAD,
    SHEET_WIDTH,
    caption,
    class_label,
    image_report,
    sheet_layout,
    snapshot_class_names,
)
from aigc_core.data.snapshot import image_table, write_snapshot
from aigc_core.images import contact_sheet, png_bytes
from aigc_core.report import (
    ReportError,
    ReportItem,
    mlflow_links,
    mlflow_ui_url,
    reason_counts,
    render_report,
    write_report,
)
from tests.conftest import tiny_images
from tests.unit.test_content import image_model, make_all, plan_for  # noqa: F401 (a fixture)


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


def rejected(reasons: list[list[str]]) -> list[ReportItem]:
    return [
        ReportItem(id=f"r{i}", kept=False, reasons=r, scores={"conf": i / 10, "label": "7"})
        for i, r in enumerate(reasons)
    ]


def cards(html: str, panel: str) -> list[dict[str, str]]:
    """The data attributes of the cards of one panel, in page order."""
    start = html.index(f'id="cards-{panel}"')
    end = html.find("<script", start) if "<script" in html[start:] else len(html)
    found = re.findall(r'<div class="card \w+"([^>]*)>', html[start:end])
    return [
        {k: htmllib.unescape(v) for k, v in re.findall(r'data-(\w+)="([^"]*)"', attrs)}
        for attrs in found
    ]


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
    assert html.count("<script") == 1 and "<script>" in html  # one inline script, no src
    script = html[html.index("<script>") : html.index("</script>")]
    assert not re.search(r"https?:|fetch\(|XMLHttpRequest|import\(", script)
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
    assert "<script" not in html  # nothing to filter: no script


def test_the_rejected_tab_opens_when_nothing_was_kept():
    html = render_report("t", {}, [ReportItem(id="a", kept=False, reasons=["duplicate"])])
    assert 'id="tab-rejected" checked' in html and 'id="tab-kept">' in html


def test_an_empty_kept_tab_says_which_reasons_rejected_everything():
    html = render_report("t", {}, rejected([["duplicate"], ["low_conf<0.9", "duplicate"], []]))
    kept_panel = html[html.index('id="panel-kept"') : html.index('id="panel-rejected"')]
    assert (
        '<p class="why">Nothing was kept: all 3 items were rejected, for duplicate (2), '
        "low_conf&lt;0.9 (1) (an item with several reasons counts in each).</p>" in kept_panel
    )
    html = render_report("t", {}, rejected([["duplicate"], ["memorized"]]))
    assert "for duplicate (1), memorized (1).</p>" in html
    # with something kept, no such line
    html = render_report("t", {}, [ReportItem(id="k", kept=True), *rejected([["duplicate"]])])
    assert "Nothing was kept" not in html


def test_the_rejected_tab_has_a_control_per_reason_with_counts_and_sorts():
    reasons = [["duplicate"], ["low_conf<0.9", "duplicate"], ["memorized"], []]
    html = render_report("t", {}, [ReportItem(id="k", kept=True), *rejected(reasons)])
    assert reason_counts(rejected(reasons)) == {"duplicate": 2, "low_conf<0.9": 1, "memorized": 1}
    controls = html[html.index('id="controls-rejected"') : html.index('id="cards-rejected"')]
    assert 'id="controls-rejected" hidden' in html  # shown by the script only
    boxes = re.findall(r'<input type="checkbox" value="([^"]*)" checked> ([^<]*)<span', controls)
    assert boxes == [
        ("duplicate", "duplicate "),
        ("low_conf&lt;0.9", "low_conf&lt;0.9 "),
        ("memorized", "memorized "),
        ("", "no reason "),
    ]
    assert re.findall(r'class="count">\((\d+)\)', controls) == ["2", "1", "1", "1"]
    options = re.findall(r'<option value="([^"]*)">', controls)
    # numeric scores only: "label" is a class name, not a number to sort by
    assert options == ["", "reason", "score:conf:asc", "score:conf:desc"]
    found = cards(html, "rejected")
    assert [c["i"] for c in found] == ["0", "1", "2", "3"]  # batch order
    assert [c["reasons"] for c in found] == [
        "duplicate",
        "low_conf<0.9;duplicate",
        "memorized",
        "",
    ]
    assert found[1]["scores"] == '{"conf": 0.1, "label": null}'


def test_scores_that_are_not_finite_numbers_do_not_break_the_page_data():
    item = ReportItem(id="x", kept=False, reasons=["r"], scores={"ppl": float("nan"), "ok": True})
    (card,) = cards(render_report("t", {}, [item]), "rejected")
    assert card["scores"] == '{"ok": null, "ppl": null}'  # valid JSON: NaN is not


def test_the_card_limit_takes_every_reason_in_turn():
    reasons = [["duplicate"]] * 8 + [["memorized"]] + [["low_conf<0.9"]] * 3
    html = render_report("t", {}, rejected(reasons), max_cards=4)
    found = cards(html, "rejected")
    assert [c["reasons"] for c in found] == ["duplicate", "duplicate", "memorized", "low_conf<0.9"]
    assert [c["i"] for c in found] == ["0", "1", "8", "9"]
    assert "(4 of 12: the first of each reason in turn)" in html
    assert 'class="count">(8)' in html  # counts are of every rejected item, not the shown ones


SUMMARY = {"model_name": "aigc-dcgan-digits", "model_version": "3", "run_id": "abc123"}


def test_run_ids_and_the_model_version_link_to_the_mlflow_ui():
    summary = {**SUMMARY, "batch_run_id": "def456", "snapshot_id": "s1"}
    html = render_report(
        "t", summary, [], mlflow_url="http://127.0.0.1:5000/", mlflow_experiment_id="1"
    )
    assert '<a href="http://127.0.0.1:5000/#/experiments/1/runs/abc123">abc123</a>' in html
    assert '<a href="http://127.0.0.1:5000/#/experiments/1/runs/def456">def456</a>' in html
    assert '<a href="http://127.0.0.1:5000/#/models/aigc-dcgan-digits/versions/3">3</a>' in html
    assert html.count("<a ") == 3  # the snapshot id is not an MLflow object
    plain = render_report("t", summary, [])
    assert "<a " not in plain and "<td>abc123</td>" in plain


def test_links_quote_names_and_refuse_urls_with_credentials_or_other_schemes():
    odd = {**SUMMARY, "model_name": 'a/b"<c>', "run_id": "r?x=1"}
    links = mlflow_links("https://mlflow.example/prefix", odd, "7")
    assert links["run_id"] == "https://mlflow.example/prefix/#/experiments/7/runs/r%3Fx%3D1"
    # the UI has no page for a run without its experiment: no run links then
    assert set(mlflow_links("https://mlflow.example", odd)) == {"model_version"}
    assert links["model_version"].endswith("/#/models/a%2Fb%22%3Cc%3E/versions/3")
    for bad in ("http://user:secret@127.0.0.1:5000", "javascript:alert(1)", "sqlite:///x.db"):
        with pytest.raises(ReportError, match="not an http\\(s\\) URL"):
            render_report("t", SUMMARY, [], mlflow_url=bad)
    assert mlflow_links("", SUMMARY) == {}


@pytest.mark.parametrize(
    "tracking_uri, ui",
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://aigc:p%40ss@127.0.0.1:5000/", "http://127.0.0.1:5000"),  # no credentials
        ("https://host.example/mlflow/?token=x#frag", "https://host.example/mlflow"),
        ("http://[::1]:5000", "http://[::1]:5000"),
        ("sqlite:////home/u/.aigc/mlflow.db", ""),
        ("file:///tmp/mlruns", ""),
        ("databricks", ""),
        ("http://127.0.0.1:99999", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_the_mlflow_ui_url_of_a_tracking_uri(tracking_uri, ui):
    assert mlflow_ui_url(tracking_uri) == ui


def test_everything_user_provided_is_escaped():
    evil = '<img src=x onerror="alert(1)">'
    item = ReportItem(
        id=f"id{evil}",
        kept=False,
        reasons=[f"r{evil}"],
        scores={"label": evil, f"k{evil}": 1.0},
        prompt=evil,
        text=evil,
    )
    summary = {"model_name": evil, "model_version": "1", "note": evil, "d": {"x": evil}}
    html = render_report(evil, summary, [item], mlflow_url="http://127.0.0.1:5000")
    assert "<img src=x" not in html and 'onerror="' not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "%3Cimg%20src%3Dx" in html  # in the model version's link, quoted


# ---------------------------------------------------------------------------------------------
# what publishing puts in the report of an image batch: class names, captions, sheet layout


def test_captions_cannot_be_misread_and_fit_under_their_cell():
    assert caption("4", 4, 0.3512) == "4 · p=0.35"  # not "4 0.35", which reads as 40.35
    assert caption("golden_retriever", 2, 0.9) == "golden_re… · p=0.90"
    assert caption("chat_été", 5, 0.5) == "5 · p=0.50"  # the sheet's font draws ASCII only
    font = ImageFont.load_default()
    for width, caps in ((8, ["4 · p=0.35"]), (28, ["golden_re… · p=0.90", "1 · p=1.00"])):
        scale, cols = sheet_layout(width, caps)
        cell = width * scale + 2 * SHEET_PAD
        assert max(font.getlength(c) for c in caps) + 4 <= cell  # a gap before the next one
        assert cols * cell <= SHEET_WIDTH and 1 <= cols <= 16
    assert sheet_layout(64, ["1 · p=0.50"]) == (2, 9)  # wide images keep the 2x scale


def test_class_names_come_from_the_snapshot_or_the_index_stays(home):
    data = tiny_images(n=20)
    names = ["cat", "dog<b>", *[f"c{i}" for i in range(8)]]
    extra = {"label_set": list(range(10)), "label_names": names, "image_shape": [1, 28, 28]}
    named = write_snapshot(home.datasets, "pets", image_table(data), kind="image", source="s",
                           params={}, extra=extra)  # fmt: skip
    extra = {"label_set": list(range(10)), "image_shape": [1, 28, 28]}
    bare = write_snapshot(home.datasets, "idx", image_table(tiny_images(n=20, seed=1)),
                          kind="image", source="s", params={}, extra=extra)  # fmt: skip
    assert snapshot_class_names(home, named.id) == names
    assert snapshot_class_names(home, bare.id) is None  # an older snapshot: no names
    assert snapshot_class_names(home, "0" * 64) is None  # not in this home
    assert class_label(1, names) == "dog<b>"
    assert class_label(12, names) == "12" and class_label(3, None) == "3"


def batch_table(labels: list[int], kept: list[bool]) -> pa.Table:
    imgs = np.random.default_rng(0).integers(0, 255, (len(labels), 8, 8), dtype=np.uint8)
    return pa.table(
        {
            "id": [f"i{k}" for k in range(len(labels))],
            "png": [png_bytes(x) for x in imgs],
            "predicted_label": labels,
            "confidence": [0.35] * len(labels),
            "train_distance": [1.5] * len(labels),
            "kept": kept,
            "reason": ["" if k else "low_confidence<0.9" for k in kept],
        }
    )


def test_image_cards_and_sheets_name_the_classes():
    table = batch_table([1, 0, 12], [True, False, False])
    report_items, sheets = image_report(table, ["cat", "dog<b>"])
    assert [i.scores["label"] for i in report_items] == ["dog<b>", "cat", "12"]
    html = render_report("t", {}, report_items, sheets=sheets)
    assert "label dog&lt;b&gt; · conf 0.35" in html and "dog<b>" not in html
    kept_sheet = Image.open(io.BytesIO(sheets["kept"]))
    scale, _ = sheet_layout(8, ["dog<b> · p=0.35"])
    assert kept_sheet.width == 8 * scale + 2 * SHEET_PAD  # one cell, wide enough for its caption
    items_by_index, _ = image_report(table)
    assert [i.scores["label"] for i in items_by_index] == ["1", "0", "12"]


def test_a_published_batch_report_links_to_mlflow_and_names_classes(home, request):
    version, registry = request.getfixturevalue("image_model")  # test_content's
    plan = plan_for(home, version, registry, n=6, shards=2)
    make_all(plan, home)
    names = [f"class-{i}" for i in range(10)]
    with pytest.raises(ReportError):  # refused before anything is written
        content.publish(plan, content.curate(plan), mlflow_url="http://u:pw@127.0.0.1:5000")
    assert not Path(plan.batch_dir).exists() and Path(plan.work_dir).exists()
    batch = content.publish(
        plan,
        content.curate(plan),
        batch_run_id="brun1",
        mlflow_url="http://127.0.0.1:5000",
        mlflow_experiment_id="1",
        class_names=names,
    )
    html = (Path(batch.batch_dir) / "report.html").read_text()
    assert f'href="http://127.0.0.1:5000/#/experiments/1/runs/{version.run_id}"' in html
    assert 'href="http://127.0.0.1:5000/#/experiments/1/runs/brun1"' in html
    assert f'href="http://127.0.0.1:5000/#/models/{version.name}/versions/3"' in html
    assert re.search(r"label class-\d · conf", html)
