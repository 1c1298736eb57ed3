"""``report.html``: one self-contained page (CSS inline, figures as SVG data URIs)."""

from __future__ import annotations

import html

from replicator.core.report.compare import UNIFORM
from replicator.core.report.tables import VERDICT_WORDS, per_seed_rows, stage_rows, table_rows, verdict_lines

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;
color:#1f2328;line-height:1.45;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;
padding-bottom:4px}.sub{color:#59636e;margin:0 0 16px}
table{border-collapse:collapse;font-size:13px;width:100%}th,td{padding:5px 8px;\
border-bottom:1px solid #d0d7de;
text-align:left;white-space:nowrap}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.base td{font-weight:600}tr.ref td{color:#59636e;font-style:italic}
.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}.unresolved{color:#6e7781}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-style:normal;color:#fff}
.badge.better{background:#1a7f37;color:#fff}.badge.worse{background:#cf222e;color:#fff}
.badge.unresolved{background:#8c959f;color:#fff}
ul.verdicts{padding-left:18px}ul.verdicts li{margin:4px 0}
.flags{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 14px;margin:12px 0}
.flags h2{border:none;margin:4px 0}.ok{color:#1a7f37}
figure{margin:10px 0 22px}figure img{max-width:100%;height:auto;display:block}
figcaption{color:#59636e;font-size:13px}.missing{color:#59636e;font-style:italic}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
"""


def _results_table_html(data: dict) -> str:
    """The comparison table: one row per variant, then the reference rows; verdicts coloured."""
    e = html.escape
    header, cells, verdicts = table_rows(data)
    numeric = {"log loss", "Δ vs base", "P(lower)", "accuracy", "ECE", "time/run", "tokens/run"}
    n_var = len(data["variants"])
    trs = []
    for k, (c, verdict) in enumerate(zip(cells, verdicts, strict=True)):
        cls = "base" if k == 0 else "ref" if k >= n_var else ""
        tds = []
        for h, x in zip(header, c, strict=True):
            klass = ["num"] if h in numeric else []
            if h in ("Δ vs base", "95% interval") and verdict and not cls:
                klass.append(verdict)
            text = e(x.strip("*"))
            if h == "verdict" and verdict:
                text = f'<span class="badge {verdict}">{text}</span>'
            tds.append(f'<td class="{" ".join(klass)}">{text}</td>' if klass else f"<td>{text}</td>")
        trs.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>" if cls else "<tr>" + "".join(tds) + "</tr>")
    return ('<table id="results-table"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in header)
            + "</tr></thead><tbody>" + "".join(trs) + "</tbody></table>")


def _verdict_items_html(data: dict) -> list[str]:
    """One list item per verdict sentence, with its badge where a variant has one."""
    e = html.escape
    lines = verdict_lines(data)
    items = []
    for v, line in zip([v for v in data["variants"] if not v["is_base"]], lines, strict=False):
        badge = (f'<span class="badge {v["verdict"]}">{e(VERDICT_WORDS[v["verdict"]])}</span> '
                 if v["verdict"] else "")
        items.append(f"<li>{badge}{e(line)}</li>")
    return items + [f"<li>{e(line)}</li>" for line in lines[len(items):]]


def render_html(data: dict, compared: list[str], title: str, figs: list[dict]) -> str:
    e = html.escape
    table, items = _results_table_html(data), _verdict_items_html(data)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(title)}</title>",
        f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
        f'<p class="sub">Base: <b>{e(data["base"])}</b> ({e(", ".join(data["base_runs"]))}). '
        "Δ = variant − base log loss on the same validation rows; lower is better. 95% paired bootstrap "
        "intervals over "
        f'{e(data["bootstrap"]["resamples"])}, {data["bootstrap"]["n_boot"]} resamples.</p>',
    ]
    if data["flags"]:
        parts.append('<div class="flags" id="flags"><h2>Not comparable as they stand</h2><ul>'
                     + "".join(f"<li><b>{e(f['run'])}</b>: {e('; '.join(f['differs']))}</li>"
                               for f in data["flags"])
                     + "</ul></div>")
    parts += ['<h2>Verdicts</h2><ul class="verdicts" id="verdicts">'
              + ("".join(items) or "<li>only the base: nothing to compare</li>") + "</ul>"]
    fig0 = figs[0]
    parts.append(_figure_html(fig0))
    parts += ["<h2>Comparison</h2>", table, _per_seed_html(data), _stages_html(data)]
    if data.get("substitutions"):
        parts.append('<h2>Substitutions</h2><ul id="substitutions">'
                     + "".join(f"<li>{e(x)}</li>" for x in data["substitutions"]) + "</ul>")
    for fig in figs[1:]:
        parts.append(f"<h2>{e(fig['title'])}</h2>" + _figure_html(fig, title=False))
    parts.append("<h2>Comparability</h2><ul>")
    if not data["flags"]:
        parts.append('<li class="ok">all runs share the base\'s data hash, validation rows (per seed) and '
                     "environment</li>")
    parts += [f"<li>{e(n)}</li>" for n in data["notes"]]
    parts += [f"<li>{e(r['name'])}: {e(r['source'])}</li>" for r in data["references"]
              if r["name"] != UNIFORM]
    parts.append("</ul><h2>What was compared</h2><ul>"
                 + "".join(f'<li class="mono">{e(c)}</li>' for c in compared)
                 + "</ul></body></html>")
    return "\n".join(parts) + "\n"


def _per_seed_html(data: dict) -> str:
    return _small_table_html(f"{data['base']} per split seed", "per-seed", *per_seed_rows(data))


def _stages_html(data: dict) -> str:
    return _small_table_html(f"Stages of {data['base']}", "stages", *stage_rows(data), text_columns=1)


def _small_table_html(title: str, table_id: str, header: list[str], cells: list[list[str]],
                      text_columns: int = 0) -> str:
    """A titled table of numbers (the first ``text_columns`` columns are text); '' without rows."""
    if not cells:
        return ""
    e = html.escape

    def td(k: int, x: str) -> str:
        return f"<td>{e(x)}</td>" if k < text_columns else f'<td class="num">{e(x)}</td>'

    return (f'<h2>{e(title)}</h2><table id="{table_id}"><thead><tr>'
            + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(td(k, x) for k, x in enumerate(c)) + "</tr>" for c in cells)
            + "</tbody></table>")


def _figure_html(fig: dict, title: bool = True) -> str:
    e = html.escape
    if "missing" in fig:
        return f'<p class="missing" id="{fig["id"]}-missing">{e(fig["missing"])}</p>'
    head = f"<h2>{e(fig['title'])}</h2>" if title else ""
    return (f'{head}<figure><img id="{fig["id"]}" alt="{e(fig["alt"])}" src="{fig["src"]}">'
            f"<figcaption>{e(fig['caption'])}</figcaption></figure>")
