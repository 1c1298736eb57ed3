"""SVG figures as data URIs (core/report/plots.py)."""

from __future__ import annotations

import base64

import numpy as np

from replicator.core.report import plots as P

PREFIX = "data:image/svg+xml;base64,"


def _svg(uri: str) -> str:
    assert uri.startswith(PREFIX)
    return base64.b64decode(uri[len(PREFIX):]).decode()


def test_verdict_color_and_palette():
    assert P.verdict_color(-0.2, -0.1) == P.BETTER and P.verdict_color(0.1, 0.2) == P.WORSE
    assert P.verdict_color(-0.1, 0.1) == P.UNRESOLVED
    assert len(P.palette(10)) == 10 and P.palette(10)[8] == P.palette(10)[0]
    assert P._grid(5) == (2, 4) and P._grid(2) == (1, 2)


def test_delta_plot_is_deterministic_svg():
    entries = [{"name": "toy +focal", "delta": -0.05, "lo": -0.08, "hi": -0.02},
               {"name": "toy +no_swap", "delta": 0.001, "lo": -0.01, "hi": 0.012}]
    a, b = P.delta_plot(entries, "Δ"), P.delta_plot(entries, "Δ")
    assert a == b
    svg = _svg(a)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Date" not in svg
    assert P.BETTER in svg and P.UNRESOLVED in svg
    assert P.delta_plot(entries[:1], "Δ") != a


def test_other_plots_return_svg():
    series = [{"name": "v", "color": "#0969da", "seed": 1, "losses": list(np.linspace(1.1, 0.6, 30)),
               "boundaries": [15]}]
    assert _svg(P.loss_plot(series)).count("<svg") == 1
    conf = [{"name": "v", "counts": np.array([[5, 1, 0], [2, 4, 1], [0, 1, 3]])}]
    assert "<svg" in _svg(P.confusion_plot(conf))
    rel = [{"name": "v", "color": "#0969da", "ece": 0.03, "count": [0, 5, 10], "confidence": [0.0, 0.5, 0.8],
            "accuracy": [0.0, 0.45, 0.85]}]
    assert "<svg" in _svg(P.reliability_plot(rel))
    pts = [{"delta": -0.01, "lo": -0.02, "hi": 0.0}, None]
    line = [{"name": "v", "color": "#0969da", "points": pts}]
    assert P.length_plot(["0–10", "11–20"], line, "chars") == P.length_plot(["0–10", "11–20"], line, "chars")
