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


LONG_NAMES = ["2nd +smoke", "2nd +armorm +tta:on +smoke",
              "2nd +smoke ensemble fixed: gemma 0.667 + armorm 0.333",
              "cpu +lm_off +text_off +lengths_off +pca_off +temperature:on", "x" * 70]


def _title_boxes(fig) -> list:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    with matplotlib.rc_context(P.RC):
        canvas.draw()
    renderer = canvas.get_renderer()
    return [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]


def test_panel_titles_fit_their_panels_and_never_overlap():
    """2nd's report had the panel titles of long variant names running into each other: they are wrapped to
    the panel's width now (at most three lines, the last shortened)."""
    rel = [{"name": n, "ece": 0.1, "count": np.ones(10), "confidence": np.linspace(0.05, 0.95, 10),
            "accuracy": np.linspace(0.05, 0.95, 10)} for n in LONG_NAMES]
    conf = [{"name": n, "counts": np.ones((3, 3))} for n in LONG_NAMES]
    for fig in (P.reliability_figure(rel), P.confusion_figure(conf)):
        boxes = _title_boxes(fig)
        assert len(boxes) == len(LONG_NAMES)
        overlaps = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                    if boxes[i].overlaps(boxes[j])]
        assert overlaps == []
    assert P.wrap("2nd +smoke ensemble fixed: gemma 0.667 + armorm 0.333", 25) == \
        "2nd +smoke ensemble\nfixed: gemma 0.667 +\narmorm 0.333"
    assert P.wrap("x" * 100, 25).count("\n") == 2 and P.wrap("short", 25) == "short"
