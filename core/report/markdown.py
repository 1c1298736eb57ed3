"""``report.md``: the comparison table, verdicts, per-seed and per-stage tables, comparability."""

from __future__ import annotations

from replicator.core.report.compare import UNIFORM
from replicator.core.report.tables import per_seed_rows, stage_rows, table_rows, verdict_lines


def markdown_table(data: dict) -> str:
    header, cells, _ = table_rows(data)
    right = {"log loss", "Δ vs base", "P(lower)", "accuracy", "ECE", "time/run", "tokens/run"}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if h in right else "---" for h in header) + "|"]
    for c in cells:
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in c) + " |")
    return "\n".join(lines)


def render_markdown(data: dict, compared: list[str], title: str) -> str:
    out = [f"# {title}", "", f"Base: **{data['base']}** ({', '.join(data['base_runs'])}). Δ = variant − base "
           "log loss on the same validation rows (lower is better), with a 95% paired bootstrap interval "
           f"({data['bootstrap']['n_boot']} resamples of {data['bootstrap']['resamples']}).", "",
           markdown_table(data), "", "## Verdicts", ""]
    out += [f"- {line}" for line in verdict_lines(data)] or ["- only the base: nothing to compare"]
    header, cells = per_seed_rows(data)
    if cells:
        out += ["", f"## {data['base']} per split seed", "", "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in cells]
    header, cells = stage_rows(data)
    if cells:
        out += ["", f"## Stages of {data['base']}", "", "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in cells]
    if data.get("substitutions"):
        out += ["", "## Substitutions (what this run stands in for the original)", ""]
        out += [f"- {x}" for x in data["substitutions"]]
    out += ["", "## Comparability", ""]
    if data["flags"]:
        for f in data["flags"]:
            out.append(f"- **{f['run']}** differs from the base: " + "; ".join(f["differs"]))
    else:
        out.append("- all runs share the base's data hash, validation rows (per seed) and environment")
    out += [f"- {n}" for n in data["notes"]]
    out += [f"- {r['name']}: {r['source']}" for r in data["references"] if r["name"] != UNIFORM]
    out += ["", "## What was compared", ""] + [f"- {c}" for c in compared] + [""]
    return "\n".join(out)
