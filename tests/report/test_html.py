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
