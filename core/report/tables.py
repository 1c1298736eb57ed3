"""The report's numbers as text: the cells of its tables and its verdict sentences (shared by the
Markdown and the HTML page)."""

from __future__ import annotations

import json

from replicator.core.report.compare import LENGTH, STYLE, UNIFORM


def _f(x, fmt="{:.4f}", none="—") -> str:
    return none if x is None else fmt.format(x)


def _signed(x: float) -> str:
    s = f"{x:+.4f}"
    return "+0.0000" if s == "-0.0000" else s  # no negative zero


def _seconds(s) -> str:
    if s is None:
        return "—"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _tokens(t) -> str:
    if t is None:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if t >= div:
            return f"{t / div:.3g}{unit}"
    return f"{t:.0f}"


VERDICT_WORDS = {"better": "lower loss (real)", "worse": "higher loss (real)", "unresolved": "not resolved"}
# reference rows are read from the base's side: a reference with higher loss is good news for the base
REF_WORDS = {"better": "base loses to it", "worse": "base beats it", "unresolved": "not resolved"}
REF_CLASS = {"better": "worse", "worse": "better", "unresolved": "unresolved"}


GAIN = "gain from the technique"
#: what the solutions' write-ups claim the technique is worth (a column only when some variant has a claim)
CLAIMED = "write-ups claim"
#: the comparison table's numeric columns (right-aligned)
NUMERIC = {"log loss", "Δ vs base", "P(lower)", "accuracy", "ECE", "time/run", "tokens/run", GAIN}
#: what a variant's direction means, in words
SWITCHES = {"on": "adds it", "off": "removes it", None: "—"}


def _bounds(d: dict) -> str:
    return f"[{_signed(d['lo'])}, {_signed(d['hi'])}]"


def _interval(d: dict, key: str = "delta") -> str:
    return f"{_signed(d[key])} {_bounds(d)}"


def gain_cell(g: dict | None) -> str:
    """The gain from the technique with its interval ("—" for a variant that switches none)."""
    return "—" if g is None else _interval(g, "gain")


def has_claims(data: dict) -> bool:
    """Does some variant come with what the write-ups claim about its technique?"""
    return any(v.get("claimed") for v in data["variants"])


def table_rows(data: dict) -> tuple[list[str], list[list[str]], list[str | None]]:
    """Header, cells and the verdict of each line of the comparison table (variants, then references); the
    write-ups' claim beside the gain where some variant has one (:func:`has_claims`)."""
    header = ["variant", "seeds", "log loss", "Δ vs base", "95% interval", GAIN, "P(lower)", "verdict",
              "accuracy", "ECE", "time/run", "tokens/run", "rows/run (paired)"]
    cells, verdicts = [], []
    for v in data["variants"]:
        ll = _f(v["log_loss"]) + (f" ± {v['log_loss_sd']:.4f}" if v["log_loss_sd"] is not None else "")
        d = v["delta"]
        if v["is_base"]:
            dcols = ["base", "", "", "", "base"]
        elif d is None:
            dcols = ["—", "—", "—", "—", "no pairs"]
        else:
            dcols = [_signed(d["delta"]), _bounds(d), gain_cell(v.get("gain")), f"{d['p_better']:.2f}",
                     VERDICT_WORDS[v["verdict"]]]
        rows_txt = _f(v["n_rows"], "{:.0f}") + (f" ({d['n_rows']} paired)" if d else "")
        cells.append([v["name"], ", ".join(map(str, v["seeds"])), ll, *dcols, _f(v["accuracy"], "{:.3f}"),
                      _f(v["ece"], "{:.3f}"), _seconds(v["seconds"]), _tokens(v["train_tokens"]), rows_txt])
        verdicts.append(v["verdict"])
    for r in data["references"]:
        d = r["delta"]
        if d is None:
            dcols = ["—", "—", "", "—", "—"]
        else:
            dcols = [_signed(d["delta"]), _bounds(d), "", f"{d['p_better']:.2f}", REF_WORDS[r["verdict"]]]
        cells.append([f"*{r['name']}*", "", _f(r["log_loss"]), *dcols, _f(r["accuracy"], "{:.3f}"),
                      "", "", "", "same rows"])
        verdicts.append(REF_CLASS[r["verdict"]] if r["verdict"] else None)
    if has_claims(data):
        at = header.index(GAIN) + 1
        header.insert(at, CLAIMED)
        claims = [("" if v["is_base"] else v.get("claimed") or "—") for v in data["variants"]]
        for c, claim in zip(cells, claims + [""] * len(data["references"]), strict=True):
            c.insert(at, claim)
    return header, cells, verdicts


def _value(x) -> str:
    text = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False, default=str)
    return text if len(text) <= 48 else text[:45] + "..."


def config_change_text(changes: list[dict], most: int = 4) -> str:
    """``key: old → new; ...`` of a variant's config changes (at most ``most``, then how many more)."""
    if not changes:
        return "—"
    parts = [f"{c['key']}: {_value(c['base'])} → {_value(c['variant'])}" for c in changes[:most]]
    more = len(changes) - most
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def variant_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the table of what each variant stands for: its toggles or override with their
    description, whether it adds or removes the technique, and the config keys it changed (base → variant)."""
    header = ["variant", "toggle", "what it measures", "technique", "config changed (base → variant)"]
    cells = []
    for v in data["variants"]:
        if v["is_base"]:
            continue
        about = v.get("about") or []
        cells.append([v["name"], ", ".join(a["label"] for a in about) or "—",
                      "; ".join(a["about"] for a in about) or "—",
                      SWITCHES[v.get("direction")] if len(about) == 1 else "—",
                      config_change_text(v.get("config_changes") or [])])
    return header, cells


def seed_delta_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the Δ-per-seed table: each variant compared with the base on one seed at a time
    (empty when no variant has paired rows on several seeds)."""
    header = ["variant", "seed", "Δ vs base", "95% interval", GAIN, "paired rows"]
    cells = []
    for v in data["variants"]:
        for d in v.get("delta_per_seed") or []:
            cells.append([v["name"], str(d["seed"]), _signed(d["delta"]), _bounds(d),
                          gain_cell(d.get("gain")), str(d["n_rows"])])
    return header, cells


def degenerate_lines(data: dict) -> list[str]:
    """One line per run whose predictions are degenerate (the base's included)."""
    return [f"{x['variant']} ({x['run']}, seed {x['seed']}): " + "; ".join(x["warnings"])
            for x in data.get("degenerate") or []]


def expected_lines(data: dict) -> list[str]:
    """One line per run that differs from the base as its toggle declares (not a comparability problem)."""
    return [f"{x['run']}: " + "; ".join(x["differs"])
            + f" (expected: its toggle changes {', '.join(x['declared'])} on purpose)"
            for x in data.get("expected_differences") or []]


def _interval_cells(ref: dict) -> list[str]:
    """Δ (base − reference) and its interval of a reference on one seed; dashes where it is absent."""
    d = ref.get("base_minus_reference")
    return [_signed(d["delta"]), f"[{_signed(d['lo'])}, {_signed(d['hi'])}]"] if d else ["—", "—"]


def per_seed_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-seed table: the base and each reference per seed, and the base's Δ
    against the length baseline (base − length) and the length-and-style baseline (base − style) with
    their intervals ("—" for a run made before that baseline existed)."""
    header = ["seed", "rows", "base", "uniform", "class prior", "length baseline", "style baseline",
              "Δ vs length (base − length)", "95% interval", "Δ vs style (base − style)", "95% interval"]
    cells = []
    for s in data.get("per_seed") or []:
        refs = s["references"]
        prior = next((v for k, v in refs.items() if k.startswith("class prior")), {})
        length, style = refs.get(LENGTH, {}), refs.get(STYLE, {})
        cells.append([str(s["seed"]), str(s["n_rows"]), _f(s["log_loss"]),
                      _f(refs.get(UNIFORM, {}).get("log_loss")), _f(prior.get("log_loss")),
                      _f(length.get("log_loss")), _f(style.get("log_loss")),
                      *_interval_cells(length), *_interval_cells(style)])
    return header, cells


def stage_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-stage table of the base run: each stage's log loss without and with TTA,
    and the length and style baselines' on the same rows ("—" where metrics.json has none)."""
    stages = data.get("stages") or []
    if not stages:
        return [], []
    header = ["stage", "train rows", "valid rows", "log loss (no TTA)", "with TTA", "final",
              "length baseline", "style baseline", "steps", "time"]
    return header, [[s["stage"], _f(s["n_train_rows"], "{}"), _f(s["n_valid_rows"], "{}"), _f(s["log_loss"]),
                     _f(s["tta_log_loss"]), _f(s["final_log_loss"]), _f(s["length_log_loss"]),
                     _f(s.get("style_log_loss")),
                     str(s["optimizer_steps"] if s["optimizer_steps"] is not None else "—"),
                     _seconds(s["seconds"])]
                    for s in stages]


def verdict_lines(data: dict) -> list[str]:
    out = []
    base = data["base"]
    for v in data["variants"]:
        if v["is_base"]:
            continue
        d = v["delta"]
        if d is None:
            out.append(f"{v['name']}: no Δ against the base ({v['why_no_delta']}).")
            continue
        ci = f"Δ {_signed(d['delta'])} [{_signed(d['lo'])}, {_signed(d['hi'])}]"
        size = f"{d['n_rows']} rows, {d['n_groups']} prompt groups, {d['n_seeds']} seed(s)"
        if v["verdict"] == "unresolved":
            half = (d["hi"] - d["lo"]) / 2
            line = (f"{v['name']}: {ci}: the interval includes 0: not resolved at this sample size "
                    f"({size}); a difference smaller than about ±{half:.4f} cannot be told from noise here.")
        else:
            how = "lower log loss than" if v["verdict"] == "better" else "higher log loss than"
            line = (f"{v['name']}: {ci}: {how} {base}; the interval excludes 0: a real difference at this "
                    f"sample size ({size}).")
        out.append(line + _gain_words(v))
    return out + [_reference_line(base, r) for r in data["references"] if r["delta"] is not None]


def _gain_words(v: dict) -> str:
    """`` The technique (what it is) is worth +0.0068 [...]: it helps.`` for a variant that switches one."""
    g = v.get("gain")
    if g is None:
        return ""
    what = v["about"][0]["about"] if v.get("about") else "the technique"
    if g["lo"] > 0:
        reading = "it helps"
    elif g["hi"] < 0:
        reading = "it hurts"
    else:
        reading = "its worth is not resolved"
    return (f" Gain from the technique ({what}; log loss without it − with it): {_interval(g, 'gain')}: "
            f"{reading}.")


def _reference_line(base: str, r: dict) -> str:
    """``<base> beats the <reference> reference: Δ vs <reference> (base − reference) -0.0120 [...]
    excludes 0.``"""
    d = r["base_minus_reference"]
    ci = f"Δ vs {r['name']} (base − reference) {_signed(d['delta'])} [{_signed(d['lo'])}, {_signed(d['hi'])}]"
    if d["hi"] < 0:
        return f"{base} beats the {r['name']} reference: {ci} excludes 0."
    if d["lo"] > 0:
        return f"{base} is worse than the {r['name']} reference: {ci} excludes 0."
    return f"{base} is not distinguishable from the {r['name']} reference: {ci} includes 0."
