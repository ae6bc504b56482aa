"""report.html in a real browser: headless Debian Chromium, no network, every image decoded.

A copy of the report gets a small script at the top of <head> that records any
resource that fails to load and, on `load`, writes the state of every image and
every network fetch into the DOM; `--dump-dom` prints it. A screenshot of the
unmodified report is saved to test-artifacts/report.png.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import clientscope as cs
from clientscope.reporting import ReportResult

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian chromium is not installed (make test installs it)",
    ),
]

PROBE = """<script>
window.__failed = [];
window.addEventListener("error", function (e) {
  if (e.target && e.target !== window) { window.__failed.push(e.target.currentSrc || e.target.src || e.target.href || e.target.tagName); }
}, true);
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight};
  });
  var fetched = performance.getEntriesByType("resource").map(function (r) { return r.name; });
  var out = document.createElement("pre");
  out.id = "cs-probe";
  out.textContent = JSON.stringify({failed: window.__failed, images: images, fetched: fetched,
                                    title: document.title, width: document.body.scrollWidth});
  document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="cs-chromium-") as profile:
        return subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
                *args,
            ],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportResult]:
    root = tmp_path_factory.mktemp("browser")
    cs.simulate("incident", root / "incident.cs", seed=2, captures=90, clients=120)
    yield cs.report(root / "incident.cs", root / "report")


def test_report_loads_with_every_image_and_no_network(
    written: ReportResult, tmp_path: Path
) -> None:
    page = written.html.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    run = _chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    match = re.search(r'<pre id="cs-probe">(.*?)</pre>', run.stdout, re.S)
    assert match, run.stdout[-2000:]
    import html

    state = json.loads(html.unescape(match.group(1)))
    assert state["failed"] == []
    assert (
        state["fetched"] == []
    )  # nothing but the file itself: no CSS, font, script or image fetched
    assert len(state["images"]) == 8
    for image in state["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert state["title"].startswith("Connection exhaustion review")


def test_screenshot_is_saved(written: ReportResult) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    run = _chromium("--window-size=1280,3200", f"--screenshot={shot}", written.html.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_report_prints(written: ReportResult, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    run = _chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", written.html.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 3  # A4 pages, figures not cut away
