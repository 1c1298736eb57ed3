"""``report.html``: one self-contained page (CSS inline, figures as SVG data URIs), rendered from the
jinja2 template ``templates/report.html.j2`` with autoescaping on: this module prepares plain text and
CSS classes, the template lays them out (no HTML is built by string concatenation)."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from replicator.core.report.compare import UNIFORM
from replicator.core.report.markdown import intro
from replicator.core.report.tables import (
    CLAIMED,
    GAIN,
    NUMERIC,
    VERDICT_WORDS,
    degenerate_lines,
    expected_lines,
    per_seed_rows,
    seed_delta_rows,
    stage_rows,
    table_rows,
    variant_rows,
    verdict_lines,
)

TEMPLATES = Path(__file__).parent / "templates"

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;
color:#1f2328;line-height:1.45;padding:0 16px}
h1{font-size:24px;margin:0 0 4px;overflow-wrap:anywhere}h2{font-size:18px;margin:28px 0 8px;
border-bottom:1px solid #d0d7de;padding-bottom:4px;overflow-wrap:anywhere}.sub{color:#59636e;margin:0 0 16px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #d0d7de;text-align:left;white-space:nowrap;vertical-align:top}
th{background:#f6f8fa;white-space:normal}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.wrap{white-space:normal;min-width:14em}
td.claim{white-space:normal;min-width:10em;font-size:12px;color:#59636e}
td.name{white-space:normal;min-width:10em;max-width:22em;overflow-wrap:anywhere}
tr.base td{font-weight:600}tr.ref td{color:#59636e;font-style:italic}
.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}.unresolved{color:#6e7781}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-style:normal;color:#fff}
.badge.better{background:#1a7f37;color:#fff}.badge.worse{background:#cf222e;color:#fff}
.badge.unresolved{background:#8c959f;color:#fff}
ul.verdicts{padding-left:18px}ul.verdicts li{margin:4px 0}
.flags{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 14px;margin:12px 0}
.flags.warn{background:#fff1e5;border-color:#bc4c00}
.flags h2{border:none;margin:4px 0}.flags p{margin:4px 0}.ok{color:#1a7f37}
figure{margin:10px 0 22px}figure img{max-width:100%;height:auto;display:block}
figcaption{color:#59636e;font-size:13px}.missing{color:#59636e;font-style:italic}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
"""


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("report.html.j2")


def _results_rows(data: dict) -> dict:
    """The comparison table as cells with their CSS classes: one row per variant, then the reference rows;
    Δ and its interval coloured by the verdict, the verdict as a badge, the write-ups' claim wrapped."""
    header, cells, verdicts = table_rows(data)
    n_var = len(data["variants"])
    rows = []
    for k, (c, verdict) in enumerate(zip(cells, verdicts, strict=True)):
        cls = "base" if k == 0 else "ref" if k >= n_var else ""
        out = []
        for h, x in zip(header, c, strict=True):
            klass = (["num"] if h in NUMERIC else ["name"] if h == "variant" else ["claim"] if h == CLAIMED
                     else [])
            if h in ("Δ vs base", "95% interval") and verdict and not cls:
                klass.append(verdict)
            gain = data["variants"][k].get("gain") if k < n_var else None
            if h == GAIN and gain:  # green where the technique helps, red where it hurts (resolved)
                klass.append("better" if gain["lo"] > 0 else "worse" if gain["hi"] < 0 else "unresolved")
            out.append({"text": x.strip("*"), "cls": " ".join(klass),
                        "badge": verdict if h == "verdict" and verdict else None})
        rows.append({"cls": cls, "cells": out})
    return {"header": header, "rows": rows}


def _verdict_items(data: dict) -> list[dict]:
    """One item per verdict sentence, with its badge where a variant has one."""
    lines = verdict_lines(data)
    variants = [v for v in data["variants"] if not v["is_base"]]
    items = [{"verdict": v["verdict"], "badge": VERDICT_WORDS[v["verdict"]] if v["verdict"] else None,
              "text": line} for v, line in zip(variants, lines, strict=False)]
    return items + [{"verdict": None, "badge": None, "text": line} for line in lines[len(items):]]


def _table(header: list[str], cells: list[list[str]]) -> dict:
    return {"header": header, "rows": cells}


def render_html(data: dict, compared: list[str], title: str, figs: list[dict]) -> str:
    return _template().render(
        data=data, title=title, css=CSS, intro=intro(data, GAIN[0].upper() + GAIN[1:],
                                                     CLAIMED[0].upper() + CLAIMED[1:]),
        numeric=NUMERIC, figs=figs, compared=compared,
        results=_results_rows(data), verdicts=_verdict_items(data),
        variants=_table(*variant_rows(data)), seed_deltas=_table(*seed_delta_rows(data)),
        per_seed=_table(*per_seed_rows(data)), stages=_table(*stage_rows(data)),
        degenerate=degenerate_lines(data), expected=expected_lines(data),
        references=[r for r in data["references"] if r["name"] != UNIFORM],
    )
