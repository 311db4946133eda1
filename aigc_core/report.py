"""A static HTML review report of a content batch: one self-contained file, no server, no network.

Images (contact sheets, item thumbnails, spectrograms) and sounds (audio items' WAV files) are
inlined as data: URIs, so the file can be mailed or opened from disk. Two tabs (pure CSS radio
buttons) show kept and rejected items: first a contact sheet (image batches), then one card per
item with its scores and all of its rejection reasons: a thumbnail for an image, the prompt
(highlighted) and the generated text for a text, a player (`<audio controls>`) and a log-mel
spectrogram at its own size for an audio clip. At most `max_cards` cards per tab (300; an audio
batch's report asks for fewer, `content.publish.AUDIO_CARDS`) bound the file's size.
The kept tab opens first, or the rejected one when nothing was kept; an empty kept tab says
which reasons rejected everything.

The rejected tab has a control per reason (with its count) to filter the cards, and a sort by
reason or by any numeric score; a small inline script runs them (the page reads the same
without it: the controls stay hidden). The state lives in the URL's fragment, so a filtered view
can be linked: `report.html#reason=duplicate&sort=score:conf:asc`.

A batch whose request named classes (a conditional model's `--labels`) shows, under the
summary, a table of the items asked and kept per class, and each card the class asked
(`asked`) beside the one the evaluator sees (`label`).

When an MLflow tracking server is given (`mlflow_url`), the summary's run ids and the model
version link to its UI; otherwise they are plain text. Everything shown is escaped: class names
come from folder names, texts from a model, reasons and ids from the batch.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from aigc_core.atomic import write_bytes_atomic

MAX_CARDS = 300  # cards per tab, at most
RUN_KEYS = ("run_id", "batch_run_id")  # summary keys that hold MLflow run ids
MODEL_KEYS = ("model_name", "model_version")  # the summary keys of a registered model version


class ReportError(ValueError):
    """A report cannot be written as asked (e.g. an MLflow URL it must not link to)."""


@dataclass
class ReportItem:
    id: str
    kept: bool
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, object] = field(default_factory=dict)
    png: bytes | None = None  # image items
    text: str | None = None  # text items: the generated text
    prompt: str | None = None  # text items: what the text continues (shown in bold before it)
    wav: bytes | None = None  # audio items: the clip as a WAV file (`png`: its spectrogram)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:16px 0 8px}
[hidden]{display:none!important}
table.meta{border-collapse:collapse;margin:8px 0}
.meta td{padding:2px 10px;border-bottom:1px solid #ddd}
.meta td:first-child{color:#666}
table.labels{border-collapse:collapse;margin:8px 0}
.labels th,.labels td{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}
.labels th:first-child,.labels td:first-child{text-align:left}
input.tab{display:none}
label.tab{display:inline-block;padding:8px 16px;border:1px solid #ccc;border-bottom:none;
  cursor:pointer;background:#eee;margin-right:4px;border-radius:6px 6px 0 0}
#tab-kept:checked~label[for=tab-kept],#tab-rejected:checked~label[for=tab-rejected]{
  background:#fff;font-weight:600}
.panel{display:none;border:1px solid #ccc;background:#fff;padding:12px}
#tab-kept:checked~#panel-kept,#tab-rejected:checked~#panel-rejected{display:block}
img.sheet{image-rendering:pixelated;max-width:100%;border:1px solid #ddd}
.controls{display:flex;flex-wrap:wrap;gap:6px 12px;align-items:center;margin:4px 0 8px;
  padding:6px 8px;background:#f4f4f4;border-radius:6px}
.controls label{white-space:nowrap}
.controls .count{color:#666}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin-top:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:6px;width:150px;background:#fff;
  font-size:11px}
.card.text{width:320px}
.card.audio{width:210px}
.card.audio img{width:auto;height:auto;max-width:100%;image-rendering:auto}
.card audio{width:100%;height:32px;display:block;margin:0 0 4px}
.card img{width:84px;height:84px;image-rendering:pixelated;display:block;margin:0 auto 4px}
.card pre{white-space:pre-wrap;font-size:12px;margin:0 0 4px;max-height:160px;overflow:auto}
.card .id{color:#888;word-break:break-all}
.card pre b.prompt{color:#555;background:#eef}
.reason{display:inline-block;background:#fde2e2;color:#a11;border-radius:3px;padding:0 4px;
  margin:1px}
.note{color:#666}
.why{color:#a11}
"""

# Filter and sort of the rejected cards. Cards carry data-i (batch order), data-reasons
# (";"-joined) and data-scores (JSON); the state is kept in the URL's fragment.
_JS = """
(function () {
  var controls = document.getElementById("controls-rejected");
  var wrap = document.getElementById("cards-rejected");
  if (!controls || !wrap) return;
  var cards = Array.prototype.slice.call(wrap.children);
  var boxes = Array.prototype.slice.call(controls.querySelectorAll("input[type=checkbox]"));
  var sort = document.getElementById("sort-rejected");
  var shown = document.getElementById("shown-rejected");
  function order(a, b) { return a.getAttribute("data-i") - b.getAttribute("data-i"); }
  function reasons(c) { return c.getAttribute("data-reasons").split(";"); }
  function score(c, k) {
    var v = JSON.parse(c.getAttribute("data-scores"))[k];
    return typeof v === "number" ? v : null;
  }
  function compare(how) {
    if (how === "reason") {
      return function (a, b) {
        var x = a.getAttribute("data-reasons"), y = b.getAttribute("data-reasons");
        return x < y ? -1 : x > y ? 1 : order(a, b);
      };
    }
    if (how.indexOf("score:") === 0) {
      var p = how.split(":"), key = p[1], dir = p[2] === "desc" ? -1 : 1;
      return function (a, b) {
        var x = score(a, key), y = score(b, key);
        if (x === null || y === null) return x === y ? order(a, b) : x === null ? 1 : -1;
        return (x - y) * dir || order(a, b);
      };
    }
    return order;
  }
  function apply(save) {
    var on = {}, n = 0, state = new URLSearchParams();
    boxes.forEach(function (b) { if (b.checked) on[b.value] = true; });
    cards.forEach(function (c) {
      var visible = reasons(c).some(function (r) { return on[r]; });
      c.hidden = !visible;
      if (visible) n += 1;
    });
    cards.slice().sort(compare(sort.value)).forEach(function (c) { wrap.appendChild(c); });
    shown.textContent = n + " of " + cards.length + " cards shown";
    if (!save) return;
    if (boxes.some(function (b) { return !b.checked; })) {
      boxes.forEach(function (b) { if (b.checked) state.append("reason", b.value); });
    }
    if (sort.value) state.append("sort", sort.value);
    var hash = state.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }
  var given = new URLSearchParams(location.hash.slice(1));
  if (given.has("reason") || given.has("sort")) {
    var wanted = given.getAll("reason");
    if (wanted.length) boxes.forEach(function (b) { b.checked = wanted.indexOf(b.value) >= 0; });
    var how = given.get("sort") || "";
    if (sort.querySelector('option[value="' + CSS.escape(how) + '"]')) sort.value = how;
    document.getElementById("tab-kept").removeAttribute("checked");
    document.getElementById("tab-rejected").setAttribute("checked", "");  // opens its tab
  }
  boxes.forEach(function (b) { b.addEventListener("change", function () { apply(true); }); });
  sort.addEventListener("change", function () { apply(true); });
  controls.querySelectorAll("button[data-all]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      boxes.forEach(function (b) { b.checked = btn.getAttribute("data-all") === "1"; });
      apply(true);
    });
  });
  controls.hidden = false;
  apply(false);
})();
"""


def _data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _number(v: object) -> float | int | None:
    """A score's value for sorting: finite numbers only (not booleans, not NaN)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# links to the MLflow UI


def mlflow_ui_url(tracking_uri: str | None) -> str:
    """The MLflow UI's base URL for a tracking URI: an http(s) server's scheme, host, port and
    path, without credentials, query or fragment (a link must not carry a password); "" for
    anything else (a SQLite or file store has no UI to link to)."""
    parts = urlsplit((tracking_uri or "").strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    try:
        port = parts.port
    except ValueError:  # not a port number
        return ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_mlflow_url(mlflow_url: str) -> str:
    """`mlflow_url` as the report links it ("" for none); ReportError unless it is an http(s)
    server's URL without credentials, query or fragment."""
    if not mlflow_url:
        return ""
    url = mlflow_ui_url(mlflow_url)
    if url != mlflow_url.strip().rstrip("/"):
        raise ReportError(
            f"mlflow_url {mlflow_url!r} is not an http(s) URL of an MLflow server without "
            "credentials, query or fragment; give e.g. http://127.0.0.1:5000 "
            "(mlflow_ui_url(tracking_uri) makes one from a tracking URI)"
        )
    return url


def mlflow_links(
    mlflow_url: str, summary: Mapping[str, object], experiment_id: str = ""
) -> dict[str, str]:
    """Links for the summary's run ids (`RUN_KEYS`, with the runs' `experiment_id`) and model
    version (`MODEL_KEYS`) to the MLflow UI at `mlflow_url`, by summary key; none without a
    URL. A run's page is `#/experiments/<experiment>/runs/<id>` (the UI has no page for a run
    without its experiment)."""
    base = check_mlflow_url(mlflow_url)
    if not base:
        return {}
    q = functools.partial(quote, safe="")
    links = {}
    if experiment_id:
        runs = f"{base}/#/experiments/{q(str(experiment_id))}/runs"
        links = {k: f"{runs}/{q(str(summary[k]))}" for k in RUN_KEYS if summary.get(k)}
    name, version = (summary.get(k) for k in MODEL_KEYS)
    if name and version:
        links["model_version"] = f"{base}/#/models/{q(str(name))}/versions/{q(str(version))}"
    return links


# ---------------------------------------------------------------------------------------------
# the page


def _card(item: ReportItem, index: int) -> str:
    esc = html.escape
    body = []
    if item.png is not None:
        what = f"spectrogram of {item.id}" if item.wav is not None else item.id
        body.append(f'<img alt="{esc(what)}" src="{_data_uri(item.png)}">')
    if item.wav is not None:
        body.append(
            f'<audio controls preload="metadata" src="{_data_uri(item.wav, "audio/wav")}"></audio>'
        )
    if item.text is not None:
        prompt = f'<b class="prompt">{esc(item.prompt)}</b>' if item.prompt else ""
        body.append(f"<pre>{prompt}{esc(item.text)}</pre>")
    body.append(f'<div class="id">{esc(item.id)}</div>')
    body.append(
        "<div>" + " · ".join(f"{esc(k)} {esc(_fmt(v))}" for k, v in item.scores.items()) + "</div>"
    )
    body.extend(f'<span class="reason">{esc(r)}</span>' for r in item.reasons)
    kind = "text" if item.text is not None else "audio" if item.wav is not None else "image"
    numbers = {k: _number(v) for k, v in item.scores.items()}
    data = (
        f' data-i="{index}" data-reasons="{esc(";".join(item.reasons))}"'
        f' data-scores="{esc(json.dumps(numbers, sort_keys=True))}"'
    )
    return f'<div class="card {kind}"{data}>{"".join(body)}</div>'


def reason_counts(items: Sequence[ReportItem]) -> dict[str, int]:
    """Items per rejection reason, most frequent first (an item with two reasons counts in
    both)."""
    counts = Counter(r for i in items for r in i.reasons)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def shown_items(items: Sequence[ReportItem], max_cards: int) -> list[ReportItem]:
    """The items that get a card: all of them when they fit, else up to `max_cards` taken from
    each reason in turn (its earliest items first), so filtering by any reason shows some;
    in batch order."""
    if len(items) <= max_cards:
        return list(items)
    queues: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        for r in item.reasons or [""]:
            queues.setdefault(r, []).append(i)
    chosen: set[int] = set()
    pending = [iter(q) for _, q in sorted(queues.items())]
    while pending and len(chosen) < max_cards:
        for q in list(pending):
            nxt = next((i for i in q if i not in chosen), None)
            if nxt is None:
                pending.remove(q)
                continue
            chosen.add(nxt)
            if len(chosen) == max_cards:
                break
    return [items[i] for i in sorted(chosen)]


def _sort_options(items: Sequence[ReportItem]) -> list[tuple[str, str]]:
    """(value, label) of the sort control: batch order, reason, each numeric score both ways."""
    keys: list[str] = []
    for item in items:
        for k, v in item.scores.items():
            if k not in keys and _number(v) is not None:
                keys.append(k)
    options = [("", "batch order"), ("reason", "reason")]
    for k in keys:
        options += [
            (f"score:{k}:asc", f"{k}, lowest first"),
            (f"score:{k}:desc", f"{k}, highest first"),
        ]
    return options


def _controls(items: Sequence[ReportItem]) -> str:
    """The filter (a checkbox per reason, with its count) and sort controls of the rejected
    tab; hidden until the script shows them."""
    esc = html.escape
    counts = reason_counts(items)
    if unexplained := sum(not i.reasons for i in items):
        counts[""] = unexplained  # rejected without a recorded reason
    boxes = "".join(
        f'<label><input type="checkbox" value="{esc(r)}" checked> {esc(r or "no reason")} '
        f'<span class="count">({n})</span></label>'
        for r, n in counts.items()
    )
    options = "".join(
        f'<option value="{esc(v)}">{esc(label)}</option>' for v, label in _sort_options(items)
    )
    return (
        '<div class="controls" id="controls-rejected" hidden>'
        f"<span>Reasons:</span>{boxes}"
        '<button type="button" data-all="1">all</button>'
        '<button type="button" data-all="0">none</button>'
        f'<label>Sort by <select id="sort-rejected">{options}</select></label>'
        '<span class="note" id="shown-rejected"></span></div>'
    )


def _why_nothing_kept(rejected: Sequence[ReportItem]) -> str:
    counts = ", ".join(f"{html.escape(r)} ({n})" for r, n in reason_counts(rejected).items())
    several = any(len(i.reasons) > 1 for i in rejected)
    return (
        f'<p class="why">Nothing was kept: all {len(rejected)} items were rejected, for '
        f"{counts or 'no recorded reason'}"
        + (" (an item with several reasons counts in each)" if several else "")
        + ".</p>"
    )


def _panel(
    name: str,
    items: Sequence[ReportItem],
    sheet: bytes | None,
    max_cards: int,
    rejected: Sequence[ReportItem] = (),
) -> str:
    parts = [f'<div class="panel" id="panel-{name}">']
    if not items and name == "kept" and rejected:
        parts.append(_why_nothing_kept(rejected))
    elif not items:
        parts.append(f'<p class="note">No {name} items.</p>')
    if sheet is not None:
        parts.append(
            f'<h2>Contact sheet</h2><img class="sheet" alt="{name} contact sheet" '
            f'src="{_data_uri(sheet)}">'
        )
    if items:
        shown = shown_items(items, max_cards)
        if len(shown) == len(items):
            note = ""
        elif shown == list(items[: len(shown)]):
            note = f" (first {len(shown)} of {len(items)})"
        else:
            note = f" ({len(shown)} of {len(items)}: the first of each reason in turn)"
        parts.append(f"<h2>Items{note}</h2>")
        if name == "rejected":
            parts.append(_controls(items))
        index = {id(item): i for i, item in enumerate(items)}
        parts.append(
            f'<div class="cards" id="cards-{name}">'
            + "".join(_card(i, index[id(i)]) for i in shown)
            + "</div>"
        )
    parts.append("</div>")
    return "".join(parts)


def _summary_rows(summary: Mapping[str, object], links: Mapping[str, str]) -> str:
    esc = html.escape
    rows = []
    for k, v in summary.items():
        if isinstance(v, dict | list):
            value = f"<code>{esc(json.dumps(v, sort_keys=True))}</code>"
        else:
            value = esc(_fmt(v))
        if k in links:
            value = f'<a href="{esc(links[k])}">{value}</a>'
        rows.append(f"<tr><td>{esc(str(k))}</td><td>{value}</td></tr>")
    return "".join(rows)


def _label_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Items asked and kept per class: a table under the summary; nothing without rows."""
    if not rows:
        return ""
    esc = html.escape
    body = []
    for r in rows:
        requested, kept = int(r["requested"]), int(r["kept"])
        share = f"{kept / requested:.0%}" if requested else "-"
        name = str(r.get("class", r["label"]))
        shown = esc(name) if name == str(r["label"]) else f"{esc(name)} ({esc(str(r['label']))})"
        body.append(f"<tr><td>{shown}</td><td>{requested}</td><td>{kept}</td><td>{share}</td></tr>")
    return (
        "<h2>Classes asked</h2><table class=labels><tr><th>class</th><th>requested</th>"
        f"<th>kept</th><th>kept %</th></tr>{''.join(body)}</table>"
    )


def render_report(
    title: str,
    summary: dict[str, object],
    items: Sequence[ReportItem],
    sheets: dict[str, bytes] | None = None,
    max_cards: int = MAX_CARDS,
    mlflow_url: str = "",
    mlflow_experiment_id: str = "",
    labels: Sequence[Mapping[str, object]] = (),
) -> str:
    """The report as one HTML string. `sheets` maps "kept"/"rejected" to contact-sheet PNGs;
    `summary` values that are dicts or lists are shown as JSON. `labels`: one row per class
    asked ({"label", "class" (its name), "requested", "kept"}), shown as a table. With
    `mlflow_url` (an MLflow server's http(s) base URL, e.g. http://127.0.0.1:5000) and the
    runs' experiment id, the summary's run ids and model version link to its UI (see
    `mlflow_links`); a URL with credentials raises ReportError."""
    esc = html.escape
    sheets = sheets or {}
    kept = [i for i in items if i.kept]
    rejected = [i for i in items if not i.kept]
    rows = _summary_rows(summary, mlflow_links(mlflow_url, summary, mlflow_experiment_id))
    # the kept tab opens first, unless nothing was kept
    open_kept, open_rejected = (" checked", "") if kept or not rejected else ("", " checked")
    script = f"<script>{_JS}</script>" if rejected else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><table class=meta>{rows}</table>{_label_table(labels)}"
        f'<input class="tab" type="radio" name="tabs" id="tab-kept"{open_kept}>'
        f'<input class="tab" type="radio" name="tabs" id="tab-rejected"{open_rejected}>'
        f'<label class="tab" for="tab-kept">Kept ({len(kept)})</label>'
        f'<label class="tab" for="tab-rejected">Rejected ({len(rejected)})</label>'
        + _panel("kept", kept, sheets.get("kept"), max_cards, rejected)
        + _panel("rejected", rejected, sheets.get("rejected"), max_cards)
        + script
        + "</body></html>"
    )


def write_report(path: Path, *args, **kwargs) -> Path:
    """Render (see `render_report`) and write atomically to `path`."""
    write_bytes_atomic(Path(path), render_report(*args, **kwargs).encode("utf-8"))
    return Path(path)
