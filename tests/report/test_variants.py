"""What a report says about each variant (issue 23): the gain from the technique with one sign for on- and
off-toggles, what the write-ups claim beside it (issue 22), the toggles' descriptions, the config keys
each variant changed, Δ per seed, the base chosen as the run without toggles, seeds pooled only where every
variant has them, differences a toggle declares left out of the "Not comparable" box, degenerate predictions
flagged, no internal key paths."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from replicator.core.config.toggles import SHARED, ToggleInfo
from replicator.core.errors import ReplicatorError
from replicator.core.report.build import build_report
from replicator.core.scoring.stats import paired_bootstrap, row_log_loss

from ..report_runs import N_ROWS, make_run, synthetic, valid_rows


def _run(root, strength: float, seed: int = 1, toggles=(), **kw):
    p, y = synthetic(seed, strength)
    return make_run(root, seed=seed, toggles=toggles, probs=p, labels=y, **kw)


def test_gain_has_the_same_sign_for_a_technique_switched_on_and_one_switched_off(tmp_path):
    """``focal:on`` lowers the loss (Δ < 0) and ``swap:off`` raises it (Δ > 0): both techniques help, and the
    gain column says so with one sign; each variant is described by its shared toggle's meaning."""
    root = tmp_path / "reports"
    base = [_run(root, 0.5, s) for s in (1, 2)]
    on = [_run(root, 1.0, s, ("focal:on",)) for s in (1, 2)]
    off = [_run(root, 0.0, s, ("swap:off",)) for s in (1, 2)]
    r = build_report([*on, *off, *base], tmp_path / "rep")  # the base found, not given, and not first
    assert r["base"] == "toy" and r["base_runs"] == [d.name for d in base]
    v_on, v_off = r["variants"][1:]
    assert v_on["name"] == "toy +focal:on" and v_off["name"] == "toy +swap:off"
    assert v_on["delta"]["delta"] < 0 < v_off["delta"]["delta"]
    assert v_on["direction"] == "on" and v_off["direction"] == "off"
    for v, sign in ((v_on, -1), (v_off, 1)):
        d, g = v["delta"], v["gain"]
        assert g["gain"] > 0 and g["lo"] > 0  # the technique helps, the interval excludes 0
        assert (g["gain"], g["lo"], g["hi"]) == pytest.approx(
            (sign * d["delta"], *sorted((sign * d["lo"], sign * d["hi"]))))
    assert v_on["about"][0]["about"] == "focal loss instead of cross-entropy"
    assert v_off["about"][0]["about"].startswith("removing swap augmentation in training")
    md = (tmp_path / "rep" / "report.md").read_text()
    header = md.split("\n| variant |", 1)[1].splitlines()[0]
    assert "gain from the technique" in header
    gain_on = f"{v_on['gain']['gain']:+.4f} [{v_on['gain']['lo']:+.4f}, {v_on['gain']['hi']:+.4f}]"
    assert f"| {gain_on} |" in md and "it helps." in md
    assert "| toy +swap:off | swap:off | removing swap augmentation in training" in md
    assert "| removes it |" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "gain from the technique" in html and 'id="variants"' in html


def test_the_write_ups_claim_stands_beside_the_gain(tmp_path):
    """Each variant's claim (its shared toggle's, a recipe toggle's ``claimed:`` key) reaches report.json,
    and the main table of report.md and report.html in a "write-ups claim" column right after the gain; a
    report where no variant has one has no such column."""
    root = tmp_path / "reports"
    base = _run(root, 0.5, recipe="smoke")
    tta = _run(root, 0.4, 1, ("tta:off",), recipe="smoke")
    r64 = _run(root, 0.6, 1, ("lora_r64",), recipe="smoke")  # described by recipes/smoke.yaml
    lengths = _run(root, 0.5, 1, ("lengths:on",), recipe="smoke")  # the write-ups say nothing about it
    r = build_report([base, tta, r64, lengths], tmp_path / "rep")
    v = {x["name"]: x for x in r["variants"]}
    claim = SHARED["tta"].claimed
    assert v["smoke +tta:off"]["claimed"] == claim and v["smoke +tta:off"]["about"][0]["claimed"] == claim
    assert "[JP]" in v["smoke +lora_r64"]["claimed"] and v["smoke +lengths:on"]["claimed"] == ""
    assert v["smoke"]["claimed"] == ""
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {x["name"]: x["claimed"] for x in saved["variants"]} == {n: x["claimed"] for n, x in v.items()}
    md = (tmp_path / "rep" / "report.md").read_text()
    header = ["variant", *md.split("\n| variant |", 1)[1].splitlines()[0].strip(" |").split(" | ")]
    at = header.index("gain from the technique") + 1
    assert header[at] == "write-ups claim"
    rows = {c[0]: c for c in (line.strip("| ").split(" | ") for line in r["table_md"].splitlines()[2:])}
    assert rows["smoke +tta:off"][at] == claim and rows["smoke +lengths:on"][at] == "—"
    assert rows["smoke"][at] == "" and "*Write-ups claim* = what the solutions' write-ups say" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    table = html.split('<table id="results-table">', 1)[1].split("</table>", 1)[0]
    assert "<th>write-ups claim</th>" in table and '<td class="claim">0.941 → 0.926' in table
    plain = build_report([base, lengths], tmp_path / "rep2")
    assert "write-ups claim" not in plain["table_md"]
    assert "write-ups claim" not in (tmp_path / "rep2" / "report.html").read_text().lower()


def test_config_diff_and_delta_per_seed(tmp_path):
    root = tmp_path / "reports"
    base = [_run(root, 0.6, s) for s in (1, 2)]
    focal = [_run(root, 1.0, s, ("focal:on",)) for s in (1, 2)]
    r = build_report([*base, *focal], tmp_path / "rep")
    v = r["variants"][1]
    assert v["config_changes"] == [{"key": "plugins.loss", "base": None, "variant": {"use": "focal_loss"}}]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert 'plugins.loss: null → {"use": "focal_loss"}' in md
    # Δ per seed: each seed's rows alone, the same bootstrap as the pooled one
    assert [d["seed"] for d in v["delta_per_seed"]] == ["1", "2"]
    groups = np.array([row["group"] for row in valid_rows()])
    for d, s in zip(v["delta_per_seed"], (1, 2), strict=True):
        p0, y = synthetic(s, 0.6)
        p1, _ = synthetic(s, 1.0)
        want = paired_bootstrap(row_log_loss(np.round(p0, 6), y), row_log_loss(np.round(p1, 6), y), groups,
                                n_boot=2000, seed=0, seeds=np.full(N_ROWS, str(s)))
        assert (d["delta"], d["lo"], d["hi"]) == pytest.approx((want["delta"], want["lo"], want["hi"]),
                                                                abs=1e-9)
        assert d["gain"]["gain"] == pytest.approx(-want["delta"], abs=1e-9)
    assert "## Δ per seed" in md and 'id="seed-deltas"' in (tmp_path / "rep" / "report.html").read_text()
    one = build_report([base[0], focal[0]], tmp_path / "rep1")  # one seed: nothing per seed to add
    assert one["variants"][1]["delta_per_seed"] == []
    assert "Δ per seed" not in (tmp_path / "rep1" / "report.md").read_text()


def test_seeds_pool_only_where_every_variant_has_them(tmp_path):
    """A base run on seed 7 next to a variant compared on seeds 0 and 1 is left out, named in a note."""
    root = tmp_path / "reports"
    base = [_run(root, 0.6, s) for s in (0, 1, 7)]
    var = [_run(root, 1.0, s, ("focal:on",)) for s in (0, 1)]
    r = build_report([*base, *var], tmp_path / "rep")
    assert [v["seeds"] for v in r["variants"]] == [[0, 1], [0, 1]]
    assert r["base_runs"] == [base[0].name, base[1].name]
    assert any(f"left out: {base[2].name} (seed 7)" in n for n in r["notes"])
    p0, y = synthetic(0, 0.6)
    p1, _ = synthetic(1, 0.6)
    mean01 = np.mean([row_log_loss(np.round(p, 6), y).mean() for p in (p0, p1)])
    assert r["variants"][0]["log_loss"] == pytest.approx(mean01, abs=1e-9)
    # no seed shared by all: every run kept, and a note says the means cover different seeds
    other = _run(root, 0.8, 9, ("swap:off",))
    r = build_report([*base, *var, other], tmp_path / "rep2")
    assert r["variants"][0]["seeds"] == [0, 1, 7] and any("share no seed" in n for n in r["notes"])


def test_base_is_the_run_without_toggles_or_the_given_one(tmp_path):
    root = tmp_path / "reports"
    plain = _run(root, 0.6, 1, ("tiny",))
    flipped = _run(root, 0.6, 1, ("tiny", "swap:off"))
    r = build_report([flipped, plain], tmp_path / "rep")  # whatever the order found
    assert r["base"] == "toy +tiny" and r["variants"][1]["name"] == "toy +tiny +swap:off"
    r = build_report([flipped, plain], tmp_path / "rep2", base=flipped)  # --base wins
    assert r["base"] == "toy +tiny +swap:off"
    assert r["variants"][1]["about"][0]["about"].startswith("without the base's swap:off")
    assert r["variants"][1]["direction"] == "on" and r["variants"][1]["gain"] is not None


def test_a_declared_change_is_expected_not_flagged(tmp_path):
    """A toggle that adds data declares ``changes: [data]``: its data hash is listed as expected, outside the
    "Not comparable" box, and --strict accepts it; an undeclared data change is still flagged."""
    root = tmp_path / "reports"
    base = _run(root, 0.6)
    extra = _run(root, 0.7, 1, ("mt_bench",), data_hash="e" * 64)
    info = {"mt_bench": ToggleInfo("mt_bench", "MT-bench judgments as extra training rows", "on", ("data",))}
    r = build_report([base, extra], tmp_path / "rep", toggles=info, strict=True)
    assert r["flags"] == [] and r["expected_differences"][0]["run"] == extra.name
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Not comparable as they stand" not in html and "changes data on purpose" in html
    assert r["variants"][1]["about"][0]["about"] == "MT-bench judgments as extra training rows"
    with pytest.raises(ReplicatorError, match="refused"):
        build_report([base, extra], tmp_path / "rep2", strict=True)  # nothing declares it


def test_recipe_toggle_described_from_its_recipe_file(tmp_path):
    """Runs of the shipped cpu recipe with its ``lm_off`` toggle: the description and direction come from
    recipes/cpu.yaml, so the gain is computed; a frozen-feature run's 0 training tokens show as a dash."""
    root = tmp_path / "reports"
    base = _run(root, 0.8, recipe="cpu")
    lm_off = _run(root, 0.5, 1, ("lm_off",), recipe="cpu")
    for d in (base, lm_off):
        m = json.loads((d / "metrics.json").read_text())
        m["stages"]["main"]["train_tokens"] = 0
        (d / "metrics.json").write_text(json.dumps(m))
    r = build_report([base, lm_off], tmp_path / "rep")
    v = r["variants"][1]
    assert v["about"][0]["about"].startswith("without the language model's features")
    assert v["direction"] == "off" and v["gain"]["gain"] == pytest.approx(v["delta"]["delta"])
    assert v["train_tokens"] is None
    line = next(x for x in r["table_md"].splitlines() if x.startswith("| cpu +lm_off |"))
    assert line.split(" | ")[11] == "—"  # tokens/run


def test_override_variants_are_named_by_their_override(tmp_path):
    """Runs with the base's toggles and another setting (``replicate ablate --vary``) are named by what they
    set, from the names ablate passes, or else from the config diff."""
    root = tmp_path / "reports"
    base = _run(root, 0.6)
    lr = root / "toy" / "toy-00000000-s1"
    shutil.copytree(base, lr)
    fp = json.loads((lr / "fingerprint.json").read_text())
    (lr / "fingerprint.json").write_text(json.dumps({**fp, "run_id": lr.name}))
    cfg = yaml.safe_load((lr / "resolved.yaml").read_text())
    cfg["train"]["lr"] = 2e-4
    (lr / "resolved.yaml").write_text(yaml.safe_dump(cfg))
    r = build_report([base, lr], tmp_path / "rep", base=base)
    assert [v["name"] for v in r["variants"]] == ["toy", "toy train.lr=0.0002"]
    assert r["variants"][1]["about"][0]["kind"] == "override" and r["variants"][1]["gain"] is None
    names = {lr.name: "toy train.lr=2e-4"}
    info = {"toy train.lr=2e-4": ToggleInfo("train.lr=2e-4", "the base with train.lr=2e-4", kind="override")}
    r = build_report([base, lr], tmp_path / "rep2", base=base, names=names, toggles=info)
    assert r["variants"][1]["name"] == "toy train.lr=2e-4"
    assert r["variants"][1]["about"][0]["about"] == "the base with train.lr=2e-4"
    assert r["variants"][1]["config_changes"] == [{"key": "train.lr", "base": 1e-4, "variant": 2e-4}]


def test_degenerate_predictions_are_flagged_for_every_run(tmp_path):
    """A base that predicts "A wins" for 98 % of the rows and never a tie is flagged; a healthy variant is
    not."""
    root = tmp_path / "reports"
    p, y = synthetic(1, 0.6)
    skew = np.tile([0.6, 0.3, 0.1], (len(y), 1))
    skew[:4] = [0.2, 0.7, 0.1]
    base = make_run(root, seed=1, probs=skew, labels=y)
    good = _run(root, 1.0, 1, ("focal:on",))
    r = build_report([base, good], tmp_path / "rep")
    (flag,) = r["degenerate"]
    assert flag["run"] == base.name and flag["variant"] == "toy"
    assert flag["warnings"] == ["'A wins' is the most likely class for 98% of the rows (over 90%)",
                                "a tie is never the most likely class"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Degenerate predictions" in md and base.name in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert 'id="degenerate"' in html and "a tie is never the most likely class" in html


def test_reader_facing_text_has_no_internal_key_paths(tmp_path):
    root = tmp_path / "reports"
    base = _run(root, 0.6, history=False)
    m = json.loads((base / "metrics.json").read_text())
    del m["train_label_prior"], m["stages"]["main"]["train_label_prior"]
    (base / "metrics.json").write_text(json.dumps(m))
    build_report([base], tmp_path / "rep")
    for name in ("report.md", "report.html"):
        text = (tmp_path / "rep" / name).read_text()
        for internal in ("stages[*]", "train_loss_history", "train_label_prior"):
            assert internal not in text
