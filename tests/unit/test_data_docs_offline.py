"""Data Docs offline, without a browser: GX's CDN links become links to vendored copies inside the
site, nothing else changes, and a page can be made into one self-contained file."""

import re
from pathlib import Path

import great_expectations
import pytest

from data_contracts import data_docs
from data_contracts.data_docs import ASSETS, ASSETS_DIR, VENDOR

JQUERY = "https://code.jquery.com/jquery-3.7.1.min.js"
POPPER = "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js"
FONT_AWESOME = "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css"
LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
PAGE = f"""<html><head>
<link rel="stylesheet" href="{FONT_AWESOME}">
<style>.navbar-brand a {{ background: url('{LOGO}full_logo_dark.png') 0 0 no-repeat; }}</style>
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<script src="{JQUERY}"></script>
<script src="{POPPER}" integrity="sha384-Apx" crossorigin="anonymous"></script>
</head><body>
<img class="NO-CACHE" src="{LOGO}logo-long.png?d=20261202T051129Z&dataContextId=c4b7" alt="GX"/>
<a href="https://greatexpectations.io">Great Expectations</a>
</body></html>"""


def test_every_vendored_file_is_there_with_its_license():
    for url, rel in ASSETS.items():
        assert (ASSETS_DIR / rel).is_file(), f"{url} -> {rel} is not vendored"
    for folder in {rel.split("/")[0] for rel in ASSETS.values()} - {"popper"}:
        assert list((ASSETS_DIR / folder).glob("LICENSE*")), folder  # popper: in the file header
    assert (ASSETS_DIR / "SOURCES.md").is_file()


def test_every_cdn_file_of_the_installed_gx_templates_has_a_local_copy():
    """Fails on a GX upgrade that links a file ASSETS does not know: vendor it, then extend."""
    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    unknown = []
    for path in sorted(templates.glob("*.j2")):
        text = path.read_text()
        for url in data_docs.remote_assets(data_docs.rewrite_html(text, "")):
            unknown.append(f"{path.name}: {url}")
    assert unknown == [], "GX links assets that are not vendored in data_docs_assets/"


def test_rewrite_points_at_local_copies_and_drops_cross_origin_attributes():
    out = data_docs.rewrite_html(PAGE, "../../")
    assert data_docs.remote_assets(PAGE) and data_docs.remote_assets(out) == []
    assert f'<script src="../../{VENDOR}/jquery/jquery.min.js"></script>' in out
    assert f'<script src="../../{VENDOR}/popper/popper.min.js"></script>' in out
    assert f'href="../../{VENDOR}/fontawesome/css/all.min.css"' in out
    # GX's logo beacon (run time and context id in the query) and its dark logo: the site's own
    assert 'src="../../static/images/logo-long.png" alt="GX"' in out
    assert "url('../../static/images/logo-long.png')" in out
    assert "vega" not in out  # no chart on the page: the chart scripts go
    assert '<a href="https://greatexpectations.io">' in out  # a hyperlink is not an asset
    assert data_docs.rewrite_html(out, "../../") == out  # idempotent


def test_chart_scripts_stay_and_are_reported_on_a_page_with_a_chart():
    page = PAGE.replace("</body>", "<script>vegaEmbed('#c', {});</script></body>")
    left = data_docs.remote_assets(data_docs.rewrite_html(page, ""))
    assert left == ["https://cdn.jsdelivr.net/npm/vega@5"]


def test_an_unknown_cdn_file_is_reported():
    new = "//cdn.example.org/new.css"
    page = f'<link rel="stylesheet" href="{new}"><script src="a.js"></script>'
    assert data_docs.remote_assets(data_docs.rewrite_html(page, "")) == [new]


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "local_site"
    deep = site / "validations" / "suite" / "run" / "20261202T000000Z"
    deep.mkdir(parents=True)
    (site / "static" / "styles").mkdir(parents=True)
    (site / "static" / "images").mkdir()
    (site / "static" / "images" / "logo-long.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (site / "index.html").write_text(PAGE)
    (deep / "page.html").write_text(PAGE)
    (site / "static" / "styles" / "gx.css").write_text(f"a {{ background: url('{LOGO}x.png') }}")
    return site


def test_make_offline_copies_the_assets_and_every_link_resolves(tmp_path):
    site = _site(tmp_path)
    assert data_docs.make_offline(site) == []
    for page in [site / "index.html", *site.glob("validations/*/*/*/*.html")]:
        text = page.read_text()
        assert data_docs.remote_assets(text) == []
        for ref in re.findall(r'(?:src|href)="([^"#]+)"', text):
            if not ref.startswith("http"):
                assert (page.parent / ref).resolve().is_file(), f"{page}: {ref}"
    css = (site / "static" / "styles" / "gx.css").read_text()
    assert "url('../../static/images/logo-long.png')" in css
    assert data_docs.make_offline(site) == []  # a second build leaves the site as it was


def test_make_offline_names_a_missing_site(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Data Docs site"):
        data_docs.make_offline(tmp_path / "nowhere")


def test_a_standalone_page_carries_its_scripts_styles_and_fonts(tmp_path):
    site = _site(tmp_path)
    data_docs.make_offline(site)
    page = data_docs.standalone_page(site / "index.html")
    assert "<script src=" not in page and "<link rel" not in page
    assert "jQuery" in page and "font/woff2;base64," in page  # Font Awesome's solid font
    assert 'src="data:image/png;base64,' in page  # the logo
