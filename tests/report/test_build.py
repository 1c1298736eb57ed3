"""``replicate report`` (core/report/build.py): runs grouped into variants (seeds pooled), delta with paired
bootstrap intervals, reference rows, comparability flags, deterministic report.md / report.html /
report.json (numbers pinned under tests/report/test_build/)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.report.build import build_report
from replicator.core.report.runs import discover_runs
from replicator.core.scoring.stats import paired_bootstrap, row_log_loss

from ..report_runs import ENV, N_ROWS, PER_GROUP, ablation, make_run, synthetic, valid_rows


def test_table_has_base_variants_and_references(tmp_path):
    runs = ablation(tmp_path / "reports")
    all_dirs = discover_runs([tmp_path / "reports" / "toy"])
    assert len(all_dirs) == 6
    out = tmp_path / "rep"
    r = build_report(all_dirs, out, base=runs["base"][0])
    names = [v["name"] for v in r["variants"]]
    assert names[0] == "toy"  # the base first, then in the order found
    assert sorted(names) == ["toy", "toy +focal", "toy +no_swap"]
    assert all(v["seeds"] == [1, 2] for v in r["variants"])
    base, focal, noswap = (next(v for v in r["variants"] if v["name"] == n) for n in ("toy", "toy +focal",
                                                                                       "toy +no_swap"))
    assert base["is_base"] and base["delta"] is None
    assert focal["verdict"] == "better" and focal["delta"]["hi"] < 0
    assert noswap["verdict"] == "unresolved" and noswap["delta"]["lo"] < 0 < noswap["delta"]["hi"]
    assert focal["delta"]["n_rows"] == 2 * N_ROWS and focal["delta"]["n_seeds"] == 2
    assert focal["delta"]["n_groups"] == N_ROWS // PER_GROUP
    assert base["log_loss_sd"] is not None and base["seconds"] == pytest.approx(301.5)
    assert base["train_tokens"] == 200_000
    refs = {x["name"]: x for x in r["references"]}
    assert refs["uniform (ln 3)"]["log_loss"] == pytest.approx(math.log(3))
    assert "as each run recorded them" in refs["class prior (training shares)"]["source"]
    prior_loss = -np.mean([np.log([0.35, 0.35, 0.30])[k] for k in synthetic(1, 0)[1].argmax(1)])
    assert refs["class prior (training shares)"]["log_loss"] == pytest.approx(prior_loss)
    assert "length features (logistic regression)" not in refs  # these runs have no baseline_length view
    assert "no baseline_length view in valid_predictions.csv.gz of" in " ".join(r["notes"])
    md = (out / "report.md").read_text()
    table = r["table_md"]
    assert table in md
    for name in ("| toy |", "| toy +focal |", "| toy +no_swap |", "*uniform (ln 3)*",
                 "*class prior (training shares)*"):
        assert name in table
    assert "interval excludes 0: a real difference at this sample size" in md
    assert "interval includes 0: not resolved at this sample size" in md
    assert "toy beats the uniform (ln 3) reference" in md
    assert not r["flags"]
    assert json.loads((out / "report.json").read_text())["variants"][1]["name"] == names[1]


def test_delta_and_interval_match_stats(tmp_path):
    runs = ablation(tmp_path / "reports", seeds=(3,))
    r = build_report(runs["base"] + runs["focal"], tmp_path / "rep")
    p0, y = synthetic(3, 0.4)
    p1, _ = synthetic(3, 1.0)
    # through the file: probabilities were written with 6 decimals
    p0, p1 = np.round(p0, 6), np.round(p1, 6)
    groups = np.array([row["group"] for row in valid_rows()])
    want = paired_bootstrap(row_log_loss(p0, y), row_log_loss(p1, y), groups, n_boot=2000, seed=0,
                            seeds=np.full(N_ROWS, "3"))
    got = r["variants"][1]["delta"]
    for k in ("delta", "lo", "hi", "se", "p_better"):
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    assert r["variants"][0]["log_loss"] == pytest.approx(row_log_loss(p0, y).mean(), abs=1e-9)


def test_rows_pair_by_seed_and_id(tmp_path):
    """The variant predicted only some rows: only rows both predicted are compared."""
    root = tmp_path / "reports"
    p, y = synthetic(1, 0.4)
    b = make_run(root, seed=1, probs=p, labels=y)
    q, _ = synthetic(1, 1.2)
    keep = np.arange(N_ROWS) % 4 != 0
    rows = [row for row, k in zip(valid_rows(), keep, strict=True) if k]
    v = make_run(root, toggles=("focal",), seed=1, probs=q[keep], labels=y[keep], rows=rows)
    other_seed = make_run(root, toggles=("no_swap",), seed=9, probs=q, labels=y)
    r = build_report([b, v, other_seed], tmp_path / "rep")
    assert r["variants"][1]["delta"]["n_rows"] == keep.sum()
    assert r["variants"][2]["delta"] is None and "no seed in common" in r["variants"][2]["why_no_delta"]
    assert any("split" in d for f in r["flags"] for d in f["differs"])  # same seed, other rows


def test_flags_data_hash_environment_and_strict_refuses(tmp_path):
    root = tmp_path / "reports"
    p, y = synthetic(1, 0.4)
    b = make_run(root, seed=1, probs=p, labels=y)
    q, _ = synthetic(1, 1.2)
    other_data = make_run(root, toggles=("focal",), seed=1, probs=q, labels=y, data_hash="e" * 64)
    gpu = make_run(root, toggles=("no_swap",), seed=1, probs=q, labels=y,
                   env={**ENV, "device": "cuda", "torch": "2.13.0+cu128"})
    r = build_report([b, other_data, gpu], tmp_path / "rep")
    flags = {f["run"]: " ".join(f["differs"]) for f in r["flags"]}
    assert set(flags) == {other_data.name, gpu.name}
    assert "data_hash eeeeeeeeeeee vs dddddddddddd" in flags[other_data.name]
    assert "device cuda vs cpu" in flags[gpu.name] and "torch 2.13.0+cu128" in flags[gpu.name]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"**{other_data.name}** differs from the base: data_hash" in md
    assert "Not comparable as they stand" in (tmp_path / "rep" / "report.html").read_text()
    with pytest.raises(ReplicatorError, match="refused") as e:
        build_report([b, other_data, gpu], tmp_path / "rep2", strict=True)
    assert other_data.name in str(e.value) and gpu.name in str(e.value) and "data_hash" in str(e.value)
    assert not (tmp_path / "rep2").exists()
    build_report([b], tmp_path / "rep3", strict=True)  # the base alone is comparable with itself


def test_byte_identical_rerun(tmp_path):
    runs = ablation(tmp_path / "reports")
    dirs = [d for ds in runs.values() for d in ds]
    build_report(dirs, tmp_path / "a")
    first = {n: (tmp_path / "a" / n).read_bytes() for n in ("report.md", "report.html", "report.json")}
    build_report(dirs, tmp_path / "a")
    for n, b in first.items():
        assert (tmp_path / "a" / n).read_bytes() == b, n
    html = first["report.html"].decode()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert html.count('src="data:image/svg+xml;base64,') == 5


def test_variant_key_and_missing_pieces(tmp_path):
    root = tmp_path / "reports"
    p, y = synthetic(1, 0.4)
    a = make_run(root, seed=1, probs=p, labels=y, variant="lr-1e-4", history=False, prior=(0.3, 0.3, 0.4))
    m = json.loads((a / "metrics.json").read_text())
    del m["train_label_prior"], m["stages"]["main"]["train_label_prior"]
    (a / "metrics.json").write_text(json.dumps(m))
    (a / "resolved.yaml").unlink()  # the variant key makes it unnecessary
    r = build_report([a], tmp_path / "rep")
    assert r["variants"][0]["name"] == "lr-1e-4"
    prior = r["references"][1]
    assert (prior["name"] == "class prior (cross-fitted validation shares)"
            and "cross-fitted" in prior["source"])
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "no training loss to draw" in html and "stages[*]" not in html  # no internal key paths
    with pytest.raises(ReplicatorError, match=r"resolved\.yaml: missing"):
        q, _ = synthetic(2, 0.4)
        b = make_run(root, seed=2, probs=q, labels=y)
        (b / "resolved.yaml").unlink()
        build_report([b], tmp_path / "rep2")
    with pytest.raises(ReplicatorError, match="no run folders"):
        discover_runs([tmp_path / "rep"])
    (a / "metrics.json").write_text("{not json")
    with pytest.raises(ReplicatorError, match=r"metrics\.json: not valid JSON"):
        build_report([a], tmp_path / "rep4")


def test_pinned_numbers(tmp_path, num_regression, data_regression):
    runs = ablation(tmp_path / "reports")
    r = build_report([d for ds in runs.values() for d in ds], tmp_path / "rep")
    cols: dict[str, list[float]] = {k: [] for k in ("log_loss", "accuracy", "ece", "delta", "lo", "hi",
                                                    "p_better")}
    for v in r["variants"][1:] + r["references"]:
        for k in ("log_loss", "accuracy"):
            cols[k].append(v[k])
        cols["ece"].append(v.get("ece") or 0.0)
        for k in ("delta", "lo", "hi", "p_better"):
            cols[k].append(v["delta"][k])
    num_regression.check({k: np.array(v) for k, v in cols.items()},
                         default_tolerance={"atol": 1e-7, "rtol": 1e-6})
    data_regression.check({"names": [v["name"] for v in r["variants"]] + [x["name"] for x in r["references"]],
                           "verdicts": [v["verdict"] for v in r["variants"]]
                           + [x["verdict"] for x in r["references"]],
                           "table_header": r["table_md"].splitlines()[0]})


def _baseline_views(seed: int, strength: float = 0.25, style: bool = True) -> dict[str, np.ndarray]:
    """Per-run baseline views as a run writes them: the prior (constant), a weak length model and a less
    weak length-and-style model (``style=False``: a run made before the style baseline existed)."""
    p, y = synthetic(seed, strength, noise=0.3)
    out = {"baseline_prior": np.tile([0.36, 0.34, 0.30], (len(y), 1)), "baseline_length": p}
    if style:
        out["baseline_style"] = synthetic(seed + 50, 2 * strength, noise=0.3)[0]
    return out


def test_reference_rows_come_from_the_runs_baseline_views(tmp_path):
    """The class prior and length references use each run's own views, pooled over seeds, with the paired
    interval of base − reference in the verdict lines."""
    root = tmp_path / "reports"
    dirs = []
    for s in (1, 2):
        p, y = synthetic(s, 1.0)
        dirs.append(make_run(root, seed=s, probs=p, labels=y, baselines=_baseline_views(s)))
    r = build_report(dirs, tmp_path / "rep")
    names = [x["name"] for x in r["references"]]
    assert names == ["uniform (ln 3)", "class prior (training shares)",
                     "length features (logistic regression)",
                     "length and style features (logistic regression)"]
    prior, length, style = r["references"][1:]
    y = synthetic(1, 0)[1]
    assert prior["log_loss"] == pytest.approx(-np.log([0.36, 0.34, 0.30])[y.argmax(1)].mean(), abs=1e-9)
    assert "baseline_prior view" in prior["source"]  # not metrics.json's (0.35, 0.35, 0.30)
    base_losses = np.concatenate([row_log_loss(np.round(synthetic(s, 1.0)[0], 6), y) for s in (1, 2)])
    ref_losses = np.concatenate([row_log_loss(np.round(_baseline_views(s)["baseline_length"], 6), y)
                                 for s in (1, 2)])
    groups = np.array([row["group"] for row in valid_rows()] * 2)
    want = paired_bootstrap(base_losses, ref_losses, groups, n_boot=2000, seed=0,
                            seeds=np.repeat(["1", "2"], N_ROWS))
    assert length["log_loss"] == pytest.approx(ref_losses.mean(), abs=1e-9)
    for k in ("delta", "lo", "hi"):
        assert length["delta"][k] == pytest.approx(want[k], abs=1e-9)
    bmr = length["base_minus_reference"]
    assert (bmr["delta"], bmr["lo"], bmr["hi"]) == pytest.approx((-want["delta"], -want["hi"], -want["lo"]))
    # the base (strength 1.0) beats the weak length model
    assert bmr["hi"] < 0 and length["verdict"] == "worse"
    md = (tmp_path / "rep" / "report.md").read_text()
    line = (f"toy beats the length features (logistic regression) reference: Δ vs length features (logistic "
            f"regression) (base − reference) {bmr['delta']:+.4f} [{bmr['lo']:+.4f}, {bmr['hi']:+.4f}] "
            "excludes 0.")
    assert line in md
    assert "| *length features (logistic regression)* |" in md and "base beats it" in md
    assert "- length features (logistic regression): multinomial logistic regression" in md
    assert not r["notes"]
    # the length-and-style reference likewise, from its own view
    style_losses = np.concatenate([row_log_loss(np.round(_baseline_views(s)["baseline_style"], 6), y)
                                   for s in (1, 2)])
    want = paired_bootstrap(base_losses, style_losses, groups, n_boot=2000, seed=0,
                            seeds=np.repeat(["1", "2"], N_ROWS))
    assert style["log_loss"] == pytest.approx(style_losses.mean(), abs=1e-9)
    assert style["log_loss"] < length["log_loss"]
    for k in ("delta", "lo", "hi"):
        assert style["delta"][k] == pytest.approx(want[k], abs=1e-9)
    assert "baseline_style view" in style["source"]
    assert "| *length and style features (logistic regression)* |" in md
    bmr = style["base_minus_reference"]
    ci = f"{bmr['delta']:+.4f} [{bmr['lo']:+.4f}, {bmr['hi']:+.4f}]"
    assert (f"the length and style features (logistic regression) reference: Δ vs length and style features "
            f"(logistic regression) (base − reference) {ci}" in md)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "length and style features (logistic regression)" in html


def test_per_seed_table_shows_each_split_seed_against_its_references(tmp_path):
    """A base of several seeds gets one line per seed: its log loss, uniform, prior, length and
    length-and-style baselines on that seed's rows, and the paired intervals of base − length and
    base − style on those rows alone."""
    root = tmp_path / "reports"
    dirs = []
    for s in (1, 2, 3):
        p, y = synthetic(s, 1.0)
        dirs.append(make_run(root, seed=s, probs=p, labels=y, baselines=_baseline_views(s)))
    r = build_report(dirs, tmp_path / "rep")
    assert [x["seed"] for x in r["per_seed"]] == [1, 2, 3]
    y = synthetic(1, 0)[1]
    groups = np.array([row["group"] for row in valid_rows()])
    for s, line in zip((1, 2, 3), r["per_seed"], strict=True):
        base = row_log_loss(np.round(synthetic(s, 1.0)[0], 6), y)
        ref = row_log_loss(np.round(_baseline_views(s)["baseline_length"], 6), y)
        want = paired_bootstrap(base, ref, groups, n_boot=2000, seed=0, seeds=np.full(N_ROWS, str(s)))
        got = line["references"]["length features (logistic regression)"]["base_minus_reference"]
        assert line["log_loss"] == pytest.approx(base.mean()) and line["n_rows"] == N_ROWS
        assert (got["delta"], got["lo"], got["hi"]) == pytest.approx(
            (-want["delta"], -want["hi"], -want["lo"]))
        ref = row_log_loss(np.round(_baseline_views(s)["baseline_style"], 6), y)
        want = paired_bootstrap(base, ref, groups, n_boot=2000, seed=0, seeds=np.full(N_ROWS, str(s)))
        got = line["references"]["length and style features (logistic regression)"]["base_minus_reference"]
        assert (got["delta"], got["lo"], got["hi"]) == pytest.approx(
            (-want["delta"], -want["hi"], -want["lo"]))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## toy per split seed" in md and md.count("| 2 | ") >= 1
    assert "| style baseline | Δ vs length (base − length) | 95% interval | Δ vs style (base − style) |" in md
    style_delta = r["per_seed"][0]["references"]["length and style features (logistic regression)"][
        "base_minus_reference"]["delta"]
    assert f"| {style_delta:+.4f} | [" in md
    assert 'id="per-seed"' in (tmp_path / "rep" / "report.html").read_text()
    one = build_report(dirs[:1], tmp_path / "rep1")
    assert one["per_seed"] == [] and "per split seed" not in (tmp_path / "rep1" / "report.md").read_text()


def test_reference_rows_fall_back_for_older_runs_and_say_so(tmp_path):
    """A base run without the views (written before baselines) leaves the length row to the runs that have
    it."""
    root = tmp_path / "reports"
    p1, y = synthetic(1, 1.0)
    old = make_run(root, seed=1, probs=p1, labels=y)
    p2, _ = synthetic(2, 1.0)
    new = make_run(root, seed=2, probs=p2, labels=y, baselines=_baseline_views(2))
    r = build_report([old, new], tmp_path / "rep")
    prior, length, style = r["references"][1:]
    assert "as each run recorded them" in prior["source"]  # not every run has the prior view
    assert length["runs"] == [new.name] and length["delta"]["n_seeds"] == 1
    assert style["runs"] == [new.name] and style["delta"]["n_seeds"] == 1
    assert len(r["notes"]) == 2  # one per fitted baseline the old run lacks
    for note, view in zip(r["notes"], ("baseline_length", "baseline_style"), strict=True):
        assert view in note and old.name in note and "run them again" in note
        assert "uses the other 1 run(s)" in note
        assert note in (tmp_path / "rep" / "report.md").read_text()
    r = build_report([old], tmp_path / "rep2")
    assert [x["name"] for x in r["references"]] == ["uniform (ln 3)", "class prior (training shares)"]
    assert "no baseline_length view" in (tmp_path / "rep2" / "report.html").read_text()
    assert "no baseline_style view" in (tmp_path / "rep2" / "report.html").read_text()


def test_runs_made_before_the_style_baseline_still_report(tmp_path):
    """Runs with the length view but no style view (every committed run made before ``style_lr``): the
    length row as before, no style row, dashes in the per-seed and stage tables, a note saying why."""
    root = tmp_path / "reports"
    dirs = []
    for s in (1, 2):
        p, y = synthetic(s, 1.0)
        dirs.append(make_run(root, seed=s, probs=p, labels=y, baselines=_baseline_views(s, style=False)))
    m = json.loads((dirs[0] / "metrics.json").read_text())
    m["stages"]["main"]["baseline_length_log_loss"] = 1.05  # as an old run's metrics.json has it
    (dirs[0] / "metrics.json").write_text(json.dumps(m))
    r = build_report(dirs, tmp_path / "rep")
    assert [x["name"] for x in r["references"]] == ["uniform (ln 3)", "class prior (training shares)",
                                                    "length features (logistic regression)"]
    (note,) = r["notes"]
    assert note.startswith("length and style features (logistic regression): no baseline_style view")
    assert r["stages"][0]["length_log_loss"] == 1.05 and r["stages"][0]["style_log_loss"] is None
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| style baseline |" in md and "| 1.0500 | — |" in md  # the stage table: length, no style
    per_seed = [line for line in md.splitlines() if line.startswith("| 1 | ")]
    assert len(per_seed) == 1 and per_seed[0].endswith("| — | — |")  # Δ vs style and its interval
    assert "length and style features (logistic regression) reference" not in md
    assert 'id="per-seed"' in (tmp_path / "rep" / "report.html").read_text()


def test_stage_table_shows_the_style_baseline_from_metrics(tmp_path):
    root = tmp_path / "reports"
    p, y = synthetic(1, 1.0)
    d = make_run(root, seed=1, probs=p, labels=y, baselines=_baseline_views(1))
    m = json.loads((d / "metrics.json").read_text())
    m["stages"]["main"].update(baseline_length_log_loss=1.0512, baseline_style_log_loss=1.0401)
    (d / "metrics.json").write_text(json.dumps(m))
    r = build_report([d], tmp_path / "rep")
    assert r["stages"][0]["style_log_loss"] == 1.0401
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| length baseline | style baseline |" in md and "| 1.0512 | 1.0401 |" in md
    assert "1.0401" in (tmp_path / "rep" / "report.html").read_text()
