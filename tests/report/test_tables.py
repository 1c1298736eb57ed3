"""The report's table cells and verdict sentences (core/report/tables.py)."""

from __future__ import annotations

from replicator.core.report import tables as T


def _data():
    d_better = {"delta": -0.05, "lo": -0.08, "hi": -0.02, "p_better": 0.999, "n_rows": 480, "n_groups": 80,
                "n_seeds": 2}
    d_unres = {"delta": 0.001, "lo": -0.01, "hi": 0.012, "p_better": 0.4, "n_rows": 480, "n_groups": 80,
               "n_seeds": 2}
    common = {"accuracy": 0.5, "ece": 0.04, "n_rows": 240}
    return {"base": "toy", "variants": [
        {"name": "toy", "seeds": [1, 2], "log_loss": 1.0, "log_loss_sd": 0.01, "delta": None, "is_base": True,
         "verdict": None, "seconds": 90, "train_tokens": 2_500_000, **common},
        {"name": "toy +focal", "seeds": [1, 2], "log_loss": 0.95, "log_loss_sd": None, "delta": d_better,
         "is_base": False, "verdict": "better", "seconds": 600, "train_tokens": 1500, **common},
        {"name": "a|b", "seeds": [1], "log_loss": 1.001, "log_loss_sd": None, "delta": d_unres,
         "is_base": False, "verdict": "unresolved", "seconds": 9000, "train_tokens": None, **common},
        {"name": "lonely", "seeds": [3], "log_loss": None, "log_loss_sd": None, "delta": None,
         "is_base": False,
         "verdict": None, "why_no_delta": "no shared seed", "seconds": None, "train_tokens": 12, **common}],
        "references": [{"name": "uniform (ln 3)", "log_loss": 1.0986, "accuracy": None,
                        "delta": {"delta": 0.0986, "lo": 0.09, "hi": 0.11, "p_better": 0.0},
                        "verdict": "worse",
                        "base_minus_reference": {"delta": -0.0986, "lo": -0.11, "hi": -0.09}}]}


def test_table_cells():
    header, cells, verdicts = T.table_rows(_data())
    assert header[:6] == ["variant", "seeds", "log loss", "Δ vs base", "95% interval",
                          "gain from the technique"]
    assert len(header) == 13 and all(len(c) == len(header) for c in cells)
    base, focal, unres, lonely, uni = cells
    assert base[:8] == ["toy", "1, 2", "1.0000 ± 0.0100", "base", "", "", "", "base"]
    assert base[10:12] == ["90 s", "2.5M"]
    assert focal[3:8] == ["-0.0500", "[-0.0800, -0.0200]", "—", "1.00", "lower loss (real)"]  # no direction
    assert focal[10:13] == ["10.0 min", "1.5k", "240 (480 paired)"]
    assert unres[3] == "+0.0010" and unres[5] == "—" and unres[7] == "not resolved"
    assert unres[10:12] == ["2.5 h", "—"]  # no training tokens (a frozen-feature run): a dash, not 0
    assert lonely[2] == "—" and lonely[3:8] == ["—", "—", "—", "—", "no pairs"] and lonely[11] == "12"
    assert uni[0] == "*uniform (ln 3)*" and uni[7] == "base beats it" and uni[-1] == "same rows"
    assert verdicts == [None, "better", "unresolved", None, "better"]  # a worse reference is good news


def test_gain_has_one_sign_for_on_and_off_toggles():
    """``focal:on`` lowering the loss and ``swap:off`` raising it both mean the technique helps: the gain
    column reads +0.05 for both, while their Δ have opposite signs."""
    data = _data()
    on, off = data["variants"][1], data["variants"][2]
    on["gain"] = {"gain": 0.05, "lo": 0.02, "hi": 0.08}  # base − variant
    on["about"] = [{"label": "focal:on", "about": "focal loss instead of cross-entropy", "direction": "on",
                    "changes": [], "kind": "shared"}]
    off.update(name="toy +swap:off", delta={**off["delta"], "delta": 0.05, "lo": 0.02, "hi": 0.08},
               verdict="worse", gain={"gain": 0.05, "lo": 0.02, "hi": 0.08},  # variant − base
               about=[{"label": "swap:off", "about": "removing swap augmentation", "direction": "off",
                       "changes": [], "kind": "shared"}], direction="off",
               config_changes=[{"key": "plugins.swap.train", "base": "random", "variant": "none"}])
    _, cells, _ = T.table_rows(data)
    assert cells[1][3] == "-0.0500" and cells[2][3] == "+0.0500"
    assert cells[1][5] == cells[2][5] == "+0.0500 [+0.0200, +0.0800]"
    lines = T.verdict_lines(data)
    assert "Gain from the technique (removing swap augmentation; log loss without it − with it): +0.0500 " \
           "[+0.0200, +0.0800]: it helps." in lines[1]
    header, rows = T.variant_rows(data)
    assert header[-1] == "config changed (base → variant)"
    assert rows[1] == ["toy +swap:off", "swap:off", "removing swap augmentation", "removes it",
                       "plugins.swap.train: random → none"]
    assert rows[2][1:] == ["—", "—", "—", "—"]  # a variant nothing is known about


def test_claim_column_only_where_a_variant_has_a_claim():
    """No claim: the 13 columns as before. A claim: "write-ups claim" right after the gain, the claim on its
    variant's line, a dash for a variant without one, nothing on the base's and the references' lines."""
    data = _data()
    assert T.CLAIMED not in T.table_rows(data)[0] and not T.has_claims(data)
    data["variants"][1]["claimed"] = "+0.003 for FULL swap vs RANDOM swap [P2]"
    data["variants"][2]["claimed"] = ""
    header, cells, _ = T.table_rows(data)
    assert len(header) == 14 and all(len(c) == 14 for c in cells)
    assert header[5:7] == ["gain from the technique", "write-ups claim"]
    assert [c[6] for c in cells] == ["", "+0.003 for FULL swap vs RANDOM swap [P2]", "—", "—", ""]
    assert cells[1][7] == "1.00" and cells[1][-1] == "240 (480 paired)"  # the other columns shifted whole


def test_formatters():
    assert T._signed(-0.00001) == "+0.0000" and T._signed(0.25) == "+0.2500"
    assert T._seconds(None) == "—" and T._seconds(119) == "119 s" and T._seconds(7200) == "2.0 h"
    assert T._tokens(999) == "999" and T._tokens(3e9) == "3G"


def test_verdict_lines():
    lines = T.verdict_lines(_data())
    assert lines[0].startswith("toy +focal: Δ -0.0500 [-0.0800, -0.0200]: lower log loss than toy")
    assert "480 rows, 80 prompt groups, 2 seed(s)" in lines[0]
    assert "not resolved at this sample size" in lines[1] and "±0.0110" in lines[1]
    assert lines[2] == "lonely: no Δ against the base (no shared seed)."
    assert lines[3].startswith("toy beats the uniform (ln 3) reference") and lines[3].endswith("excludes 0.")
    assert len(lines) == 4


def test_stage_and_seed_rows_empty_without_data():
    assert T.stage_rows({}) == ([], [])
    assert T.per_seed_rows({})[1] == []
