"""Data Docs that read offline: the site GX renders, with its CDN assets served from the site.

GX's pages link Bootstrap, jQuery, bootstrap-table, Font Awesome and more from CDNs, and fetch
GX's logo from GX's servers with the data context id in the query string. Offline, such a page
renders unstyled and its results table stays empty (bootstrap-table fills it from a script).
`make_offline` copies the same files, vendored in `data_docs_assets/` (see its SOURCES.md), into
the site and points every page at them; `standalone_page` inlines them into one page, for a copy
that leaves the site (an MLflow artifact, which the MLflow UI shows from a blob URL where no
relative link resolves).
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import os
import re
import shutil
from pathlib import Path

from aigc_core.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).parent / "data_docs_assets"
VENDOR = "static/vendor"  # where, inside a site, the vendored files go

# Every CDN file GX 1.24's page templates link, and its vendored copy under data_docs_assets/.
ASSETS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table/bootstrap-table.min.js"
    ),
    (
        "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.min.js"
    ): "bootstrap-table/bootstrap-table-filter-control.min.js",
    # GX links the 1.19.0 stylesheet of the extension beside the 1.19.1 script: one copy serves
    (
        "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.min.css"
    ): "bootstrap-table/bootstrap-table-filter-control.min.css",
    (
        "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.css"
    ): "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper/popper.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css": "bootstrap-dark/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "fontawesome/css/all.min.css"
    ),
}
# GX's logo (light and dark) comes from its servers, tagged with the run time and the data
# context id; the site ships the same logo under static/images.
GX_WEB_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
SITE_LOGO = "static/images/logo-long.png"
# vega, vega-lite and vega-embed only draw charts (`vegaEmbed(...)`); they are not vendored
CHART_SCRIPT = re.compile(
    r'[ \t]*<script src="https://cdn\.jsdelivr\.net/npm/vega[^"]*"></script>[ \t]*\n?'
)

TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.IGNORECASE)
TAG_URL = re.compile(r'\b(src|href)=(["\'])(.*?)\2', re.IGNORECASE | re.DOTALL)
CSS_URL = re.compile(r"""url\(\s*(["']?)([^"')]+)\1\s*\)""")
CORS_ATTRS = re.compile(r'\s+(?:integrity|crossorigin)=(["\']).*?\1', re.IGNORECASE)
REMOTE = re.compile(r"^(?:https?:)?//", re.IGNORECASE)


def _local(url: str) -> str | None:
    """The path, relative to the site's root, of the local copy of a remote asset; None when
    there is none."""
    if url in ASSETS:
        return f"{VENDOR}/{ASSETS[url]}"
    if url.startswith(GX_WEB_ASSETS) and url.split("?")[0].endswith(".png"):
        return SITE_LOGO
    return None


def _to_root(path: Path, site: Path) -> str:
    """The relative prefix that leads from a file of the site back to the site's root."""
    up = Path(os.path.relpath(site, path.parent)).as_posix()
    return "" if up == "." else f"{up}/"


def _rewrite_css(text: str, root: str) -> str:
    """CSS with its remote `url(...)`s pointed at the local copies."""

    def repl(m: re.Match) -> str:
        local = _local(m.group(2))
        return f"url('{root}{local}')" if local else m.group(0)

    return CSS_URL.sub(repl, text)


def _rewrite_tag(tag: str, root: str) -> str:
    """A script, link or img tag with its remote URL pointed at the local copy. Subresource
    integrity and crossorigin go: a page opened from disk has no origin, and Chromium refuses a
    crossorigin script from a file URL."""
    m = TAG_URL.search(tag)
    local = _local(m.group(3)) if m else None
    if local is None:
        return tag
    tag = tag[: m.start(3)] + root + local + tag[m.end(3) :]
    return CORS_ATTRS.sub("", tag)


def rewrite_html(text: str, root: str) -> str:
    """A Data Docs page with every remote asset it links replaced by its local copy under
    `root` (the relative path from the page to the site's root, e.g. "../../")."""
    if "vegaEmbed(" not in text:
        text = CHART_SCRIPT.sub("", text)
    text = TAG.sub(lambda m: _rewrite_tag(m.group(0), root), text)
    return _rewrite_css(text, root)  # inline <style> blocks


def remote_assets(text: str) -> list[str]:
    """The remote URLs a page or stylesheet still loads: script, link and img sources, and CSS
    `url(...)`s. Hyperlinks (`<a href>`) are not loaded and are not counted."""
    urls = [m.group(3) for tag in TAG.findall(text) for m in TAG_URL.finditer(tag)]
    urls += [m.group(2) for m in CSS_URL.finditer(text)]
    return [u for u in urls if REMOTE.match(u.strip())]


def _install_assets(site: Path) -> None:
    """Copy the vendored files into the site (again each time: a copy is ~1 MB and cheap)."""
    shutil.copytree(ASSETS_DIR, site / VENDOR, dirs_exist_ok=True)


def make_offline(site: str | Path) -> list[str]:
    """Make a Data Docs site read offline: copy the vendored assets into it and rewrite every
    page and GX stylesheet to load them. Idempotent (GX re-renders only the new validation page
    and the index; pages already rewritten stay as they are). Returns the remote assets left
    (logged as a warning), e.g. chart scripts on a page that draws a chart, or a file that a
    newer GX links and `ASSETS` does not know."""
    site = Path(site)
    if not (site / "index.html").is_file():
        raise FileNotFoundError(f"no Data Docs site at {site} (index.html is missing)")
    _install_assets(site)
    left: list[str] = []
    files = [*site.rglob("*.html"), *(site / "static" / "styles").glob("*.css")]
    for path in files:
        text = path.read_text(encoding="utf-8")
        root = _to_root(path, site)
        new = rewrite_html(text, root) if path.suffix == ".html" else _rewrite_css(text, root)
        if new != text:
            write_bytes_atomic(path, new.encode("utf-8"))
        left += [f"{path.relative_to(site)}: {url}" for url in remote_assets(new)]
    if left:
        log.warning("Data Docs still load %d remote asset(s) offline: %s", len(left), left[:5])
    return left


def _data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".woff2":
        kind = "font/woff2"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _inline_css_urls(css: str, base: Path) -> str:
    """A stylesheet with its local `url(...)`s (fonts, images) as data URIs; missing files
    (fonts GX's pages never use) are left as they are."""

    def repl(m: re.Match) -> str:
        ref = m.group(2).strip()
        if ref.startswith("data:") or REMOTE.match(ref):
            return m.group(0)
        target = (base / ref.split("?")[0].split("#")[0]).resolve()
        return f"url('{_data_uri(target)}')" if target.is_file() else m.group(0)

    return CSS_URL.sub(repl, css)


def _inline_tag(tag: str, base: Path) -> str:
    """A local script, stylesheet link or image tag as one that carries its file's content."""
    m = TAG_URL.search(tag)
    if m is None or REMOTE.match(m.group(3)) or m.group(3).startswith("data:"):
        return tag
    path = (base / m.group(3)).resolve()
    if not path.is_file():
        return tag
    name = tag[1:].split(None, 1)[0].lower()
    if name == "script":
        # a literal "</script" inside the code would end the element early
        code = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
        return f"<script>{code}"  # GX's own closing </script> follows the tag
    if name == "link" and "stylesheet" in tag.lower():
        css = _inline_css_urls(path.read_text(encoding="utf-8"), path.parent)
        return f"<style>{css}</style>"
    return tag[: m.start(3)] + _data_uri(path) + tag[m.end(3) :]


def standalone_page(page: str | Path) -> str:
    """One page of an offline site (`make_offline`) as a single HTML document: its local scripts,
    stylesheets (with their fonts) and images inlined, so the page reads anywhere, e.g. as an
    MLflow artifact. About 1.2 MB; links to other pages of the site do not follow it."""
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    text = TAG.sub(lambda m: _inline_tag(m.group(0), page.parent), text)
    return _inline_css_urls(text, page.parent)
