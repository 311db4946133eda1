"""The Data Docs the gate writes read offline: headless Chromium, with every host name unresolvable,
renders the site's results tables with their rows and Bootstrap's and Font Awesome's styles.

A probe script, added to a copy of a page in the page's own folder, records computed styles and
whether bootstrap-table loaded; the same probe on a site left as GX writes it (CDN links) shows
the failure this guards against: unstyled, and an index table with no rows.

Needs the Debian package `chromium` (`apt-get install -y chromium`); without it these tests fail
with that instruction rather than skip.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aigc_core.data.snapshot import text_table
from data_contracts import ContractViolation, data_docs, validate_snapshot

MANIFEST = {"id": "offline", "kind": "text", "text_bounds": {"min_chars": 1, "max_chars": 200}}
DOCS = [f"document {i}: some words about topic {i % 7}, long enough" for i in range(40)]
TOO_LONG = "Every document is 1 to 200 characters long (the reader's bounds)."
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: every host name fails to resolve
    "--virtual-time-budget=5000",  # let the page's scripts run before the DOM is dumped
]
# a remote URL where a page loads something: script/link/img sources and CSS url()s
REMOTE_ASSET = re.compile(
    r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=[\"']?(?:https?:)?//"
    r"|url\(\s*[\"']?(?:https?:)?//",
    re.IGNORECASE,
)
PROBE = """<script>
window.addEventListener("load", function () {
  var icon = document.querySelector("i.fas");
  document.documentElement.setAttribute("data-probe", JSON.stringify({
    navbar_display: getComputedStyle(document.querySelector("nav.navbar")).display,
    icon_font: icon ? getComputedStyle(icon, "::before").fontFamily : null,
    bootstrap_table: typeof (window.jQuery && window.jQuery.fn.bootstrapTable),
  }));
});
</script>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is missing: apt-get update && apt-get install -y chromium")
    return exe


def rendered(page: Path, profile: Path) -> tuple[dict, str]:
    """The probe's findings and the DOM of `page` as Chromium renders it offline."""
    probe = page.with_name(f"probe-{page.name}")  # same folder: relative links still resolve
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", f"{PROBE}</body>"))
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom"]
    p = subprocess.run([*cmd, probe.as_uri()], capture_output=True, text=True, timeout=120)
    probe.unlink()
    assert p.returncode == 0, p.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', p.stdout)
    assert found, f"the probe did not run on {page}"
    return json.loads(html.unescape(found.group(1))), p.stdout


def table_rows(dom: str) -> list[str]:
    """The rows (tag and cells) bootstrap-table rendered: it numbers each with data-index."""
    return re.findall(r'<tr\b[^>]*\bdata-index="\d+"[^>]*>.*?</tr>', dom, re.DOTALL)


def failing_site(results: Path):
    """A small failing validation (one document too long) saved under `results`."""
    with pytest.raises(ContractViolation) as e:
        validate_snapshot(text_table([*DOCS, "x" * 300]), MANIFEST, results_dir=results)
    report = e.value.report
    return report, Path(report.data_docs).parent


def validation_page(site: Path) -> Path:
    (page,) = site.glob("validations/text_snapshot/offline/*/*.html")
    return page


def styled(probe: dict) -> bool:
    return probe["navbar_display"] == "flex" and "Font Awesome" in (probe["icon_font"] or "")


def test_data_docs_render_offline_with_rows_and_styles(tmp_path):
    report, site = failing_site(tmp_path / "validations")
    for path in [*site.rglob("*.html"), *site.rglob("*.css")]:
        found = REMOTE_ASSET.findall(path.read_text(encoding="utf-8"))
        assert found == [], f"{path.relative_to(site)} loads remote assets: {found}"

    probe, dom = rendered(site / "index.html", tmp_path / "profile")
    assert styled(probe) and probe["bootstrap_table"] == "function", probe
    # the index's two tables: the validation results (this one run) and the suites
    (run,) = [r for r in table_rows(dom) if 'data-href="validations/' in r]
    assert "validations/text_snapshot/offline/" in run and "fa-times" in run  # failed
    assert any('data-href="expectations/text_snapshot.html"' in r for r in table_rows(dom))

    probe, dom = rendered(validation_page(site), tmp_path / "profile")
    assert styled(probe) and probe["bootstrap_table"] == "function", probe
    rows = table_rows(dom)
    for check in report.checks:  # every expectation has its row, with GX's description
        assert any(check.description in html.unescape(r) for r in rows), check.description
    (failed,) = [r for r in rows if TOO_LONG in html.unescape(r)]
    assert "fa-times" in failed and "1 unexpected values found" in failed  # marked failed

    # the self-contained copy (logged to MLflow) renders the same, away from the site
    alone = tmp_path / "elsewhere" / "page.html"
    alone.parent.mkdir()
    shutil.copy(report.data_docs_page, alone)
    probe, dom = rendered(alone, tmp_path / "profile")
    assert styled(probe) and probe["bootstrap_table"] == "function", probe
    assert any(TOO_LONG in html.unescape(r) for r in table_rows(dom))


def test_without_local_assets_the_same_site_is_unstyled_and_empty(tmp_path, monkeypatch):
    """The probe's control: the site as GX writes it, offline, fails every check above."""
    monkeypatch.setattr(data_docs, "make_offline", lambda site: [])
    _, site = failing_site(tmp_path / "validations")
    assert REMOTE_ASSET.findall((site / "index.html").read_text(encoding="utf-8"))
    probe, dom = rendered(site / "index.html", tmp_path / "profile")
    assert not styled(probe) and probe["bootstrap_table"] == "undefined", probe
    assert table_rows(dom) == []
