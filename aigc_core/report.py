"""A static HTML review report of a content batch: one self-contained file, no server, no JS.

Images (contact sheets and item thumbnails) are inlined as data: URIs, so the file can be mailed
or opened from disk. Two tabs (pure CSS radio buttons) show kept and rejected items: first a
contact sheet (image batches), then one card per item with its scores and all of its rejection
reasons: a thumbnail for an image, the prompt (highlighted) and the generated text for a text.
The kept tab opens first, or the rejected one when nothing was kept.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aigc_core.atomic import write_bytes_atomic


@dataclass
class ReportItem:
    id: str
    kept: bool
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, object] = field(default_factory=dict)
    png: bytes | None = None  # image items
    text: str | None = None  # text items: the generated text
    prompt: str | None = None  # text items: what the text continues (shown in bold before it)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:16px 0 8px}
table.meta{border-collapse:collapse;margin:8px 0}
.meta td{padding:2px 10px;border-bottom:1px solid #ddd}
.meta td:first-child{color:#666}
input.tab{display:none}
label.tab{display:inline-block;padding:8px 16px;border:1px solid #ccc;border-bottom:none;
  cursor:pointer;background:#eee;margin-right:4px;border-radius:6px 6px 0 0}
#tab-kept:checked~label[for=tab-kept],#tab-rejected:checked~label[for=tab-rejected]{
  background:#fff;font-weight:600}
.panel{display:none;border:1px solid #ccc;background:#fff;padding:12px}
#tab-kept:checked~#panel-kept,#tab-rejected:checked~#panel-rejected{display:block}
img.sheet{image-rendering:pixelated;max-width:100%;border:1px solid #ddd}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin-top:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:6px;width:150px;background:#fff;
  font-size:11px}
.card.text{width:320px}
.card img{width:84px;height:84px;image-rendering:pixelated;display:block;margin:0 auto 4px}
.card pre{white-space:pre-wrap;font-size:12px;margin:0 0 4px;max-height:160px;overflow:auto}
.card .id{color:#888;word-break:break-all}
.card pre b.prompt{color:#555;background:#eef}
.reason{display:inline-block;background:#fde2e2;color:#a11;border-radius:3px;padding:0 4px;
  margin:1px}
.note{color:#666}
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _card(item: ReportItem) -> str:
    esc = html.escape
    body = []
    if item.png is not None:
        body.append(f'<img alt="{esc(item.id)}" src="{_data_uri(item.png)}">')
    if item.text is not None:
        prompt = f'<b class="prompt">{esc(item.prompt)}</b>' if item.prompt else ""
        body.append(f"<pre>{prompt}{esc(item.text)}</pre>")
    body.append(f'<div class="id">{esc(item.id)}</div>')
    body.append(
        "<div>" + " · ".join(f"{esc(k)} {esc(_fmt(v))}" for k, v in item.scores.items()) + "</div>"
    )
    body.extend(f'<span class="reason">{esc(r)}</span>' for r in item.reasons)
    kind = "text" if item.text is not None else "image"
    return f'<div class="card {kind}">{"".join(body)}</div>'


def _panel(name: str, items: Sequence[ReportItem], sheet: bytes | None, max_cards: int) -> str:
    parts = [f'<div class="panel" id="panel-{name}">']
    if not items:
        parts.append(f'<p class="note">No {name} items.</p>')
    if sheet is not None:
        parts.append(
            f'<h2>Contact sheet</h2><img class="sheet" alt="{name} contact sheet" '
            f'src="{_data_uri(sheet)}">'
        )
    if items:
        shown = items[:max_cards]
        note = f" (first {len(shown)} of {len(items)})" if len(items) > len(shown) else ""
        parts.append(f"<h2>Items{note}</h2>")
        parts.append('<div class="cards">' + "".join(_card(i) for i in shown) + "</div>")
    parts.append("</div>")
    return "".join(parts)


def render_report(
    title: str,
    summary: dict[str, object],
    items: Sequence[ReportItem],
    sheets: dict[str, bytes] | None = None,
    max_cards: int = 300,
) -> str:
    """The report as one HTML string. `sheets` maps "kept"/"rejected" to contact-sheet PNGs;
    `summary` values that are dicts or lists are shown as JSON."""
    esc = html.escape
    sheets = sheets or {}
    kept = [i for i in items if i.kept]
    rejected = [i for i in items if not i.kept]
    rows = "".join(
        f"<tr><td>{esc(str(k))}</td><td>"
        + (
            f"<code>{esc(json.dumps(v, sort_keys=True))}</code>"
            if isinstance(v, dict | list)
            else esc(_fmt(v))
        )
        + "</td></tr>"
        for k, v in summary.items()
    )
    # the kept tab opens first, unless nothing was kept
    open_kept, open_rejected = (" checked", "") if kept or not rejected else ("", " checked")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><table class=meta>{rows}</table>"
        f'<input class="tab" type="radio" name="tabs" id="tab-kept"{open_kept}>'
        f'<input class="tab" type="radio" name="tabs" id="tab-rejected"{open_rejected}>'
        f'<label class="tab" for="tab-kept">Kept ({len(kept)})</label>'
        f'<label class="tab" for="tab-rejected">Rejected ({len(rejected)})</label>'
        + _panel("kept", kept, sheets.get("kept"), max_cards)
        + _panel("rejected", rejected, sheets.get("rejected"), max_cards)
        + "</body></html>"
    )


def write_report(path: Path, *args, **kwargs) -> Path:
    """Render (see `render_report`) and write atomically to `path`."""
    write_bytes_atomic(Path(path), render_report(*args, **kwargs).encode("utf-8"))
    return Path(path)
