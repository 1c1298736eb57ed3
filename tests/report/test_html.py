"""report.html opens from disk in headless Chromium: the table and every figure are in the rendered
DOM, and the figures really draw (a screenshot with them has far more chart colour than one with
them removed). Skipped where no Chromium is installed (CI installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from replicator.core.report.build import build_report

from ..report_runs import ablation

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="needs Chromium (apt-get install chromium) to render report.html")
PLOTS = {"plot-delta": "Delta log loss", "plot-reliability": "Reliability diagrams",
         "plot-confusion": "Confusion matrices", "plot-loss": "Training loss", "plot-length": "per quartile"}


def chromium(tmp: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def chart_pixels(png: Path) -> tuple[float, int]:
    """Share of clearly blue pixels (the confusion matrices, the palette) and the number of colours."""
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    blue = ((a[..., 2] - a[..., 0] > 60) & (a[..., 2] > 150)).mean()
    return float(blue), len(np.unique(a.reshape(-1, 3), axis=0))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    runs = ablation(tmp / "reports")
    build_report([d for ds in runs.values() for d in ds], tmp / "rep", base=runs["base"][0])
    return tmp / "rep" / "report.html"


def test_rendered_dom_has_table_and_every_plot(report, tmp_path):
    dom = chromium(tmp_path, report, "--dump-dom").stdout
    assert '<table id="results-table">' in dom
    body = dom.split('<table id="results-table">', 1)[1].split("</table>", 1)[0]
    assert len(re.findall(r"<tr", body)) == 1 + 3 + 2  # header, three variants, two references
    for name in ("toy +focal", "toy +no_swap", "uniform (ln 3)", "class prior"):
        assert name in body
    for pid, alt in PLOTS.items():
        m = re.search(rf'<img id="{pid}" alt="([^"]*)" src="data:image/svg\+xml;base64,', dom)
        assert m, f"{pid} missing from the rendered page"
        assert alt in m.group(1)
    assert "lower loss (real)" in dom and "not resolved" in dom


def test_screenshot_shows_the_figures(report, tmp_path):
    shot = tmp_path / "shot.png"
    chromium(tmp_path, report, f"--screenshot={shot}", "--window-size=1200,3000", "--hide-scrollbars")
    assert shot.stat().st_size > 10_000
    blue, colours = chart_pixels(shot)
    assert colours > 500, "the page rendered nearly blank"
    # the same page with the figures' sources removed: the chart colour must mostly go away
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'src="data:image/svg\+xml;base64,[^"]*"', 'src=""', report.read_text()))
    bare_shot = tmp_path / "bare.png"
    chromium(tmp_path, bare, f"--screenshot={bare_shot}", "--window-size=1200,3000", "--hide-scrollbars")
    bare_blue, _ = chart_pixels(bare_shot)
    assert blue > 0.005 and blue > 10 * bare_blue, (blue, bare_blue)


#: injected at the end of a copy of report.html: after layout, records on <body> the pairs of top-level
#: blocks (titles, tables, figures, boxes) whose boxes overlap, the header cells whose text is clipped, and
#: the page's width, so that --dump-dom can read them back
LAYOUT_PROBE = """<script>
(function () {
  const els = Array.from(document.querySelectorAll('body > *')).filter(e => e.tagName !== 'SCRIPT');
  const boxes = els.map(e => e.getBoundingClientRect());
  const overlaps = [];
  for (let i = 0; i < els.length; i++) for (let j = i + 1; j < els.length; j++) {
    const a = boxes[i], b = boxes[j];
    if (a.width && b.width && a.height && b.height && a.left < b.right && b.left < a.right
        && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5)
      overlaps.push(els[i].tagName + ':' + els[i].textContent.slice(0, 30) + ' / ' + els[j].tagName + ':'
                    + els[j].textContent.slice(0, 30));
  }
  const clipped = Array.from(document.querySelectorAll('th, h1, h2'))
    .filter(t => t.scrollWidth > t.clientWidth + 1).map(t => t.textContent);
  document.body.setAttribute('data-overlaps', JSON.stringify(overlaps));
  document.body.setAttribute('data-clipped', JSON.stringify(clipped));
  document.body.setAttribute('data-page-width', String(document.documentElement.scrollWidth));
})();
</script>"""


def test_report_with_the_new_columns_renders_without_overlaps(tmp_path):
    """A report with the gain column, a variant per direction with long names, Δ per seed, the variants table
    and a degenerate base: the screenshot is produced, and in the laid-out page no title, table, figure or box
    overlaps another, no header cell or title is clipped, nothing runs past a 1400-pixel window."""
    import json

    from ..report_runs import make_run, synthetic

    root = tmp_path / "reports"
    dirs = []
    for s in (1, 2):
        p, y = synthetic(s, 0.5)
        skew = np.tile([0.6, 0.3, 0.1], (len(y), 1))
        dirs.append(make_run(root, recipe="a_recipe_with_a_long_name", seed=s, probs=skew, labels=y))
        for strength, toggles in ((1.0, ("focal:on", "label_smoothing_and_more")), (0.1, ("swap:off",))):
            p, y = synthetic(s, strength)
            dirs.append(make_run(root, recipe="a_recipe_with_a_long_name", toggles=toggles, seed=s, probs=p,
                                 labels=y))
    build_report(dirs, tmp_path / "rep")
    page = tmp_path / "rep" / "report.html"
    shot = tmp_path / "new-columns.png"
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1400,2400", "--hide-scrollbars")
    assert shot.is_file() and shot.stat().st_size > 10_000
    probe = tmp_path / "rep" / "probe.html"
    probe.write_text(page.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = chromium(tmp_path, probe, "--dump-dom", "--window-size=1400,2400").stdout
    assert "gain from the technique" in dom and 'id="variants"' in dom and 'id="degenerate"' in dom
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body))
    unescape = {"&quot;": '"', "&amp;": "&", "&lt;": "<", "&gt;": ">"}
    for k, v in attrs.items():
        for a, b in unescape.items():
            v = v.replace(a, b)
        attrs[k] = v
    assert json.loads(attrs["data-overlaps"]) == []
    assert json.loads(attrs["data-clipped"]) == []
    assert int(attrs["data-page-width"]) <= 1400
