"""``replicate report``: compare runs and write ``report.md``, ``report.html`` and ``report.json``
(the same inputs give byte-identical files)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from replicator.core.config.toggles import ToggleInfo
from replicator.core.errors import ReplicatorError
from replicator.core.report.compare import compute
from replicator.core.report.figures import report_figures
from replicator.core.report.html import render_html
from replicator.core.report.markdown import markdown_table, render_markdown
from replicator.core.report.runs import Variant
from replicator.core.util.atomic import atomic_write_texts


def _compared_lines(data: dict, variants: list[Variant], out_dir: Path) -> list[str]:
    lines = []
    for v in variants:
        for r in v.runs:
            rel = os.path.relpath(r.path.resolve(), out_dir.resolve())
            lines.append(f"{v.name}: {r.run_id} (seed {r.seed}, view {r.view or 'metrics.json'}, "
                         f"data {str(r.fingerprint.get('data_hash'))[:12]}, "
                         f"{(r.fingerprint.get('environment') or {}).get('device', '?')}) at {rel}")
    return lines


def _rounded(x, nd: int = 10):
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: _rounded(v, nd) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v, nd) for v in x]
    return x


def build_report(run_dirs: list[Path], out_dir: Path, base: Path | None = None, strict: bool = False,
                 title: str | None = None, toggles: Mapping[str, ToggleInfo] | None = None,
                 names: dict[str, str] | None = None) -> dict:
    """Compare ``run_dirs`` against ``base`` (default: the run without toggles,
    :func:`~replicator.core.report.runs.pick_base`) and write ``report.md``, ``report.html`` and
    ``report.json`` into ``out_dir``. Returns the numbers, the Markdown table (``table_md``) and the files
    written (``files``). ``strict``: refuse runs not comparable with the base (a difference a toggle
    declares it makes on purpose is not refused). ``toggles``: labels the caller describes (variant name or
    toggle label -> ToggleInfo), ``names``: run id -> variant name (``replicate ablate --vary``)."""
    out_dir = Path(out_dir)
    variants, data = compute([Path(d) for d in run_dirs], base, toggles, names)
    if strict and data["flags"]:
        lines = [f"{f['run']}: " + "; ".join(f["differs"]) for f in data["flags"]]
        raise ReplicatorError("runs not comparable with the base " f"({', '.join(data['base_runs'])}), "
                              "refused (--strict):\n" + "\n".join(lines))
    recipes = sorted({r.recipe for v in variants for r in v.runs})
    n_runs = sum(len(v.runs) for v in variants)
    title = title or f"{', '.join(recipes)}: {len(variants)} variant(s), {n_runs} run(s)"
    data = _rounded(data)
    compared = _compared_lines(data, variants, out_dir)
    figs = report_figures(data, variants)
    md = render_markdown(data, compared, title)
    page = render_html(data, compared, title, figs)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"md": out_dir / "report.md", "html": out_dir / "report.html", "json": out_dir / "report.json"}
    payload = {"title": title, **data, "compared": compared}
    # all three or none (a full disk leaves the previous report whole, not a new report.json beside it)
    atomic_write_texts({files["json"]: json.dumps(payload, indent=2, ensure_ascii=False) + "\n",
                        files["md"]: md, files["html"]: page})
    return {**payload, "table_md": markdown_table(data), "files": files}
