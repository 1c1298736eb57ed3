"""Loading runs and grouping seeds into variants (core/report/runs.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.report.runs import default_out_dir, discover_runs, group_variants, load_run, load_runs

from ..report_runs import ablation, make_run, synthetic


def test_group_variants_pools_seeds_of_one_variant_base_first(tmp_path):
    runs = ablation(tmp_path / "reports", seeds=(2, 1))
    dirs = discover_runs([tmp_path / "reports"])
    assert len(dirs) == 6 and dirs == sorted(dirs)
    loaded, base = load_runs(dirs, runs["focal"][1])
    assert base.path == runs["focal"][1] and base.fingerprint["toggles"] == ["focal"]
    variants = group_variants(loaded, base)
    assert [v.name for v in variants][0] == "toy +focal"  # the base's variant first
    assert sorted(v.name for v in variants) == ["toy", "toy +focal", "toy +no_swap"]
    assert all(v.seeds == [1, 2] for v in variants)  # sorted by seed
    # without a base: the run without toggles (lowest seed), wherever it sorts among the folders
    loaded, base = load_runs(dirs, None)
    assert base.fingerprint["toggles"] == [] and base.seed == 1
    loaded, base = load_runs([runs["focal"][0], runs["no_swap"][1], runs["base"][1], runs["base"][0]], None)
    assert base.path == runs["base"][1]  # seeds (2, 1): the lowest seed's run


def test_same_config_and_seed_twice_is_a_separate_variant_and_named_variants(tmp_path):
    p, y = synthetic(1, 0.5)
    a = make_run(tmp_path / "r", seed=1, probs=p, labels=y)
    b = make_run(tmp_path / "r", seed=1, probs=p, labels=y, data_hash="e" * 64)  # another id, same config
    named = make_run(tmp_path / "r", seed=3, probs=p, labels=y, variant="mine")
    runs = [load_run(d) for d in (a, b, named)]
    variants = group_variants(runs, runs[0])
    assert [len(v.runs) for v in variants] == [1, 1, 1]
    assert variants[1].name == f"toy [{runs[1].run_id}]"
    assert variants[2].name == "mine" and variants[2].key == "variant:toy:mine"


def test_a_setting_added_later_as_null_does_not_split_a_variant(tmp_path):
    """A run made before a setting existed lacks it in resolved.yaml; a newer run of the same toggles writes
    it as null (off): one variant, two seeds. A setting that differs (not null) still tells them apart."""
    import yaml

    p, y = synthetic(1, 0.5)
    old = make_run(tmp_path / "r", seed=1, probs=p, labels=y)
    cfg = yaml.safe_load((old / "resolved.yaml").read_text())
    cfg["train"].update(nested={"lr": 1e-4})
    (old / "resolved.yaml").write_text(yaml.safe_dump(cfg))
    new = make_run(tmp_path / "r", seed=2, probs=p, labels=y, data_hash="e" * 64)
    other = make_run(tmp_path / "r", seed=3, probs=p, labels=y, data_hash="f" * 64)
    for d, value in ((new, None), (other, "style_lr")):
        cfg = yaml.safe_load((d / "resolved.yaml").read_text())
        cfg["train"].update(added=value, nested={"lr": 1e-4, "added": None})
        (d / "resolved.yaml").write_text(yaml.safe_dump(cfg))
    runs = [load_run(d) for d in (old, new, other)]
    variants = group_variants(runs, runs[0])
    assert [v.seeds for v in variants] == [[1, 2], [3]]


def test_run_numbers_view_and_history(tmp_path):
    p, y = synthetic(1, 0.5)
    d = make_run(tmp_path / "r", seed=1, probs=p, labels=y)
    run = load_run(d)
    assert run.view == "final" and run.seed == 1 and run.recipe == "toy"
    np.testing.assert_allclose(run.probs(), p, atol=1e-6)
    assert run.row_losses().shape == (len(y),)
    assert run.seconds() == 301.0 and run.train_tokens() == 200_000
    assert run.label_prior() == [0.35, 0.35, 0.30]
    losses, starts = run.loss_history()
    assert len(losses) == 40 and starts == []
    # two stages: the history concatenated, the second stage starting after the first
    m = json.loads((d / "metrics.json").read_text())
    m["stages"] = {"a": {"train_loss_history": [1.0, 0.9], "seconds": 5}, "b": {"train_loss_history": [0.5],
                                                                               "seconds": 7}}
    (d / "metrics.json").write_text(json.dumps(m))
    run = load_run(d)
    assert run.loss_history() == ([1.0, 0.9, 0.5], [3]) and run.seconds() == 12.0
    assert run.train_tokens() is None  # no stage has it and neither has the run


def test_errors_and_default_out_dir(tmp_path):
    with pytest.raises(ReplicatorError, match="no such folder"):
        discover_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReplicatorError, match="no run folders"):
        discover_runs([tmp_path / "empty"])
    with pytest.raises(ReplicatorError, match="missing"):
        load_run(tmp_path / "empty")
    with pytest.raises(ReplicatorError, match="no runs"):
        load_runs([], None)
    p, y = synthetic(1, 0.5)
    d = make_run(tmp_path / "r", seed=1, probs=p, labels=y)
    assert discover_runs([d, tmp_path / "r"]) == [d]  # no repeats
    out = default_out_dir([d])
    assert out.parent == d.parent and out.name.startswith("report-") and len(out.name) == 15
    (d / "resolved.yaml").unlink()
    with pytest.raises(ReplicatorError, match="resolved.yaml"):
        load_run(d)
