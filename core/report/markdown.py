"""``report.md``: the comparison table, what each variant changes, verdicts, Δ per seed, degenerate
predictions, per-seed and per-stage tables of the base, comparability."""

from __future__ import annotations

from replicator.core.report.compare import UNIFORM
from replicator.core.report.tables import (
    CLAIMED,
    GAIN,
    NUMERIC,
    degenerate_lines,
    expected_lines,
    has_claims,
    per_seed_rows,
    seed_delta_rows,
    stage_rows,
    table_rows,
    variant_rows,
    verdict_lines,
)

#: what Δ and the gain column mean, said once under the title (Markdown and HTML)
INTRO = ("Δ = variant − base log loss on the same validation rows (lower is better). {gain} = log loss "
         "without the technique − with it, whichever way the variant's toggle switches it, so above 0 the "
         "technique helps (— where a variant switches no single technique).")
#: what the claim column holds, said under the title when it is there
CLAIM_NOTE = (" {claimed} = what the solutions' write-ups say the technique is worth, with their source tags "
              "(SOLUTIONS.md); their numbers are log losses on their own data and leaderboards.")


def intro(data: dict, gain: str, claimed: str) -> str:
    """:data:`INTRO`, and :data:`CLAIM_NOTE` where the table has the claim column."""
    return INTRO.format(gain=gain) + (CLAIM_NOTE.format(claimed=claimed) if has_claims(data) else "")


def _table(header: list[str], cells: list[list[str]], right: set[str] = frozenset()) -> list[str]:
    return (["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if h in right else "---" for h in header) + "|"]
            + ["| " + " | ".join(x.replace("|", "\\|") for x in c) + " |" for c in cells])


def markdown_table(data: dict) -> str:
    header, cells, _ = table_rows(data)
    return "\n".join(_table(header, cells, NUMERIC))


def render_markdown(data: dict, compared: list[str], title: str) -> str:
    out = [f"# {title}", "", f"Base: **{data['base']}** ({', '.join(data['base_runs'])}). "
           + intro(data, f"*{GAIN[0].upper() + GAIN[1:]}*", f"*{CLAIMED[0].upper() + CLAIMED[1:]}*")
           + f" Intervals: 95% paired bootstrap ({data['bootstrap']['n_boot']} resamples of "
           f"{data['bootstrap']['resamples']}).", "", markdown_table(data)]
    header, cells = variant_rows(data)
    if cells:
        out += ["", "## What each variant changes", ""] + _table(header, cells)
    out += ["", "## Verdicts", ""]
    out += [f"- {line}" for line in verdict_lines(data)] or ["- only the base: nothing to compare"]
    header, cells = seed_delta_rows(data)
    if cells:
        out += ["", "## Δ per seed", ""] + _table(header, cells, NUMERIC)
    lines = degenerate_lines(data)
    if lines:
        out += ["", "## Degenerate predictions", "",
                "Runs whose predictions hardly use the three classes (one class the most likely for over "
                "90 % of the rows, or a tie never the most likely): their log loss says little about what "
                "they learnt.", ""] + [f"- **{line}**" for line in lines]
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
        out.append("- all runs share the base's data hash, validation rows (per seed) and environment"
                   + (", except where their toggles change them on purpose:" if expected_lines(data) else ""))
    out += [f"- {line}" for line in expected_lines(data)]
    out += [f"- {n}" for n in data["notes"]]
    out += [f"- {r['name']}: {r['source']}" for r in data["references"] if r["name"] != UNIFORM]
    out += ["", "## What was compared", ""] + [f"- {c}" for c in compared] + [""]
    return "\n".join(out)
