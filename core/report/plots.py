"""The report's figures, drawn with matplotlib (Agg, no pyplot state) and returned as SVG data URIs
that an ``<img>`` embeds: the HTML page stays one self-contained file, and each SVG keeps its own
ids. Output is deterministic: a fixed ``svg.hashsalt``, no date in the metadata, glyphs as paths.

Every function takes plain numbers (no run objects) and returns ``data:image/svg+xml;base64,...``.
matplotlib is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap

import numpy as np

BETTER, WORSE, UNRESOLVED = "#1a7f37", "#cf222e", "#6e7781"
CLASS_NAMES = ("A wins", "B wins", "tie")
RC = {
    "svg.hashsalt": "arena-replicator",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}


def verdict_color(lo: float, hi: float) -> str:
    return BETTER if hi < 0 else WORSE if lo > 0 else UNRESOLVED


def palette(n: int) -> list[str]:
    base = ["#0969da", "#bf8700", "#8250df", "#1a7f37", "#cf222e", "#1b7c83", "#bc4c00", "#57606a"]
    return [base[i % len(base)] for i in range(n)]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def to_data_uri(fig) -> str:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def wrap(text: str, width: int, lines: int = 3) -> str:
    """``text`` broken into lines of at most ``width`` characters (at most ``lines``, the last one
    shortened with "..."): a panel title or legend entry that fits its space instead of running into the
    next panel."""
    return "\n".join(textwrap.wrap(text, width, max_lines=lines, placeholder=" ...", break_long_words=True,
                                   break_on_hyphens=False)) or text


#: characters of a panel title per inch of panel width (10-point bold DejaVu Sans, with a margin)
TITLE_CHARS_PER_INCH = 8.5


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def delta_plot(entries: list[dict], xlabel: str) -> str:
    """Horizontal 95% intervals of Δ per entry (``name``, ``delta``, ``lo``, ``hi``), first at the top;
    green: interval below 0 (lower loss), red: above 0, grey: crosses 0."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(9, 0.9 + 0.55 * len(entries))
        ax = fig.add_subplot()
        span = max([abs(e["lo"]) for e in entries] + [abs(e["hi"]) for e in entries] + [1e-4])
        ys = [len(entries) - 1 - i for i in range(len(entries))]
        for e, y in zip(entries, ys, strict=True):
            c = verdict_color(e["lo"], e["hi"])
            ax.errorbar([e["delta"]], [y], xerr=[[e["delta"] - e["lo"]], [e["hi"] - e["delta"]]], fmt="o",
                        color=c, ecolor=c, elinewidth=3, capsize=5, markersize=8)
        right = ax.twinx()  # the numbers as right-hand tick labels: constrained layout makes room for them
        right.set_ylim(-0.6, len(entries) - 0.4)
        right.set_yticks(ys, [f"{e['delta']:+.4f} [{e['lo']:+.4f}, {e['hi']:+.4f}]" for e in entries])
        for label, e in zip(right.get_yticklabels(), entries, strict=True):
            label.set_color(verdict_color(e["lo"], e["hi"]))
        right.tick_params(axis="y", length=0)
        right.spines[:].set_visible(False)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_yticks(range(len(entries)), [wrap(e["name"], 40) for e in reversed(entries)])
        ax.set_ylim(-0.6, len(entries) - 0.4)
        ax.set_xlim(-1.15 * span, 1.15 * span)
        ax.set_xlabel(xlabel)
        ax.text(0.0, 1.02, "← lower loss than the base", transform=ax.transAxes, color=BETTER, fontsize=9,
                ha="left", va="bottom")
        ax.text(1.0, 1.02, "higher loss →", transform=ax.transAxes, color=WORSE, fontsize=9, ha="right",
                va="bottom")
        ax.grid(axis="x", alpha=0.3)
    return to_data_uri(fig)


def reliability_plot(panels: list[dict]) -> str:
    """One panel per variant: ``name``, ``confidence``/``accuracy``/``count`` per bin (top-label), ``ece``."""
    return to_data_uri(reliability_figure(panels))


def reliability_figure(panels: list[dict]):
    """The matplotlib figure of :func:`reliability_plot` (titles wrapped to their panel's width)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        rows, cols = _grid(len(panels))
        fig = _figure(3.0 * cols, 3.0 * rows)
        for k, p in enumerate(panels):
            ax = fig.add_subplot(rows, cols, k + 1)
            ax.plot([0, 1], [0, 1], linestyle="--", color="#8c959f", linewidth=1)
            count = np.asarray(p["count"], dtype=float)
            ok = count > 0
            conf, acc = np.asarray(p["confidence"])[ok], np.asarray(p["accuracy"])[ok]
            sizes = 20 + 200 * count[ok] / max(count.sum(), 1)
            ax.plot(conf, acc, color=p.get("color", "#0969da"), linewidth=1.5)
            ax.scatter(conf, acc, s=sizes, color=p.get("color", "#0969da"), zorder=3)
            ax.set_xlim(0.3, 1.0)
            ax.set_ylim(0.0, 1.0)
            ax.set_title(f"{wrap(p['name'], int(3.0 * TITLE_CHARS_PER_INCH))}\nECE {p['ece']:.4f}")
            ax.set_xlabel("confidence (top class)")
            if k % cols == 0:
                ax.set_ylabel("accuracy")
            ax.grid(alpha=0.3)
    return fig


def confusion_plot(panels: list[dict]) -> str:
    """One 3x3 panel per variant (``name``, ``counts`` [true][predicted]); cells show the row share and
    count."""
    return to_data_uri(confusion_figure(panels))


def confusion_figure(panels: list[dict]):
    """The matplotlib figure of :func:`confusion_plot` (titles wrapped to their panel's width)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        rows, cols = _grid(len(panels))
        fig = _figure(3.2 * cols, 3.1 * rows)
        for k, p in enumerate(panels):
            ax = fig.add_subplot(rows, cols, k + 1)
            m = np.asarray(p["counts"], dtype=float)
            share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
            ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
            for i in range(3):
                for j in range(3):
                    ax.text(j, i, f"{share[i, j]:.0%}\n{int(m[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.55 else "black")
            ax.set_xticks(range(3), CLASS_NAMES)
            ax.set_yticks(range(3), CLASS_NAMES if k % cols == 0 else [""] * 3)
            ax.set_xlabel("predicted")
            if k % cols == 0:
                ax.set_ylabel("true")
            ax.set_title(wrap(p["name"], int(3.2 * TITLE_CHARS_PER_INCH)))
            ax.spines[:].set_visible(False)
    return fig


def loss_plot(series: list[dict]) -> str:
    """Training loss per optimizer step: ``name``, ``color``, ``seed``, ``losses`` (stages concatenated),
    ``boundaries`` (steps where a stage starts). Thin: raw; thick: running mean over ~5% of the steps."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(9, 3.6)
        ax = fig.add_subplot()
        labelled = set()
        for s in series:
            y = np.asarray(s["losses"], dtype=float)
            x = np.arange(1, y.size + 1)
            ax.plot(x, y, color=s["color"], alpha=0.25, linewidth=0.8)
            w = max(1, y.size // 20)
            smooth = np.convolve(y, np.ones(w) / w, mode="valid")
            label = wrap(s["name"], 36) if s["name"] not in labelled else None
            labelled.add(s["name"])
            ax.plot(x[w - 1:], smooth, color=s["color"], linewidth=2, label=label)
            for b in s.get("boundaries", []):
                ax.axvline(b, color="#8c959f", linestyle=":", linewidth=1)
        ax.axhline(math.log(3), color="black", linestyle="--", linewidth=0.8)
        ax.text(1.0, math.log(3), "ln 3 (uniform) ", transform=ax.get_yaxis_transform(), ha="right",
                va="bottom", fontsize=8)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    return to_data_uri(fig)


def length_plot(buckets: list[str], lines: list[dict], xlabel: str) -> str:
    """Δ with 95% intervals per prompt-length bucket; ``lines``: ``name``, ``color``, ``points`` (a list of
    dicts with ``delta``/``lo``/``hi`` or None per bucket)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(9, 3.6)
        ax = fig.add_subplot()
        n = len(lines)
        width = 0.7 / max(n, 1)
        for k, line in enumerate(lines):
            xs, ys, lo, hi = [], [], [], []
            for b, p in enumerate(line["points"]):
                if p is None:
                    continue
                xs.append(b - 0.35 + width * (k + 0.5))
                ys.append(p["delta"])
                lo.append(p["delta"] - p["lo"])
                hi.append(p["hi"] - p["delta"])
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color=line["color"], capsize=4, elinewidth=2,
                         label=wrap(line["name"], 36))
        ax.axhline(0, color="black", linewidth=1)
        ax.set_xticks(range(len(buckets)), buckets)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Δ log loss vs base")
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
        ax.grid(axis="y", alpha=0.3)
    return to_data_uri(fig)
