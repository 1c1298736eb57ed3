"""The pseudo_labels source (plugins/pseudo_labels.py): a pool labelled by earlier stages."""

from __future__ import annotations

import pytest

from replicator.core.errors import DataError, ReplicatorError
from replicator.core.rows import DataContext, make_row, prompt_group
from replicator.plugins.pseudo_labels import PseudoLabels

from ..source_files import check_labels, write_pool_csv

pytestmark = pytest.mark.usefixtures("info_logs")


def test_pseudo_labels_pool_split(tmp_path):
    write_pool_csv(tmp_path / "pool" / "lmsys-1m-pairs.csv")
    src = PseudoLabels(file="pool/lmsys-1m-pairs.csv")
    ctx = DataContext(tmp_path, 0, stage="teacher")
    pool = src.data_sources("pool", ctx)
    assert [r["id"] for r in pool] == ["pool-77001", "pool-77002", "pool-77003", "pool-77004"]
    assert all(r["label"] is None and r["source"] == "pseudo_labels" for r in pool)
    assert pool[2]["response_b"] == ["Please recycle.", ""]
    for split in ("train", "valid", "test"):
        assert src.data_sources(split, ctx) is None
    valid = {prompt_group(["what is 15% of 80?"])}
    assert len(src.data_sources("pool", DataContext(tmp_path, 0, valid_groups=valid))) == 3
    # a recipe-wide block with from_stage feeds the pool in the labeller stage itself
    both = PseudoLabels(file="pool/lmsys-1m-pairs.csv", from_stage="teacher")
    assert len(both.data_sources("pool", ctx)) == 4 and both.data_sources("train", ctx) is None


def fake_outputs(pool: list[dict]) -> dict:
    probs = {"pool-77001": [0.8, 0.1, 0.1], "pool-77002": [0.3, 0.3, 0.4], "pool-77003": [0.7, 0.2, 0.1],
             "pool-77004": [2.0, 6.0, 2.0]}  # unnormalised: renormalised to [0.2, 0.6, 0.2]
    return {"teacher": {"pool": probs,
                        "pool_rows": [{k: v for k, v in r.items() if k != "label"} for r in pool]}}


def test_pseudo_labels_from_stage(tmp_path, caplog):
    write_pool_csv(tmp_path / "pool.csv")
    pool = PseudoLabels(file="pool.csv").data_sources("pool", DataContext(tmp_path, 0, stage="teacher"))
    outs = fake_outputs(pool)
    ctx = DataContext(tmp_path, 0, stage="student", stage_outputs=outs)
    rows = PseudoLabels(from_stage="teacher").data_sources("train", ctx)
    check_labels(rows)
    assert [r["id"] for r in rows] == [r["id"] for r in pool]
    assert rows[0]["label"] == [0.8, 0.1, 0.1]
    assert rows[3]["label"] == pytest.approx([0.2, 0.6, 0.2])
    assert rows[2]["prompt"] == ["Write a tweet about recycling.", "Shorter please."]
    assert PseudoLabels(from_stage="teacher").data_sources("pool", ctx) is None
    hard = PseudoLabels(from_stage="teacher", hard=True).data_sources("train", ctx)
    assert [r["label"] for r in hard] == [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]]
    confident = PseudoLabels(from_stage="teacher", min_confidence=0.6).data_sources("train", ctx)
    assert [r["id"] for r in confident] == ["pool-77001", "pool-77003", "pool-77004"]
    assert "dropped 1 of 4 pool row(s)" in caplog.text
    valid = {prompt_group(["Suggest a weekend trip from Berlin."])}
    ctx_v = DataContext(tmp_path, 0, stage="student", stage_outputs=outs, valid_groups=valid)
    assert len(PseudoLabels(from_stage="teacher").data_sources("train", ctx_v)) == 3


def test_pseudo_labels_errors(tmp_path):
    ctx = DataContext(tmp_path, 0, stage="student", stage_outputs={"teacher": {"train": {"1": [1, 0, 0]}}})
    with pytest.raises(ReplicatorError) as e:
        PseudoLabels(from_stage="teacher").data_sources("train", ctx)
    assert "'teacher' wrote no pool predictions" in str(e.value) and "outputs: [pool]" in str(e.value)
    with pytest.raises(ReplicatorError, match="'teacher' wrote no pool predictions"):
        PseudoLabels(from_stage="teacher").data_sources("train", DataContext(tmp_path, 0, stage="student"))
    row = make_row("pool-1", ["hi"], ["a"], ["b"])
    bad = {"teacher": {"pool": {"pool-1": [float("nan"), 0.5, 0.5]}, "pool_rows": [row]}}
    with pytest.raises(ReplicatorError, match="row pool-1 is not three finite"):
        PseudoLabels(from_stage="teacher").data_sources("train", DataContext(tmp_path, 0, stage_outputs=bad))
    missing = {"teacher": {"pool": {"pool-2": [1, 0, 0]}, "pool_rows": [row]}}
    with pytest.raises(ReplicatorError, match="no pool prediction for row pool-1"):
        PseudoLabels(from_stage="teacher").data_sources("train",
                                                        DataContext(tmp_path, 0, stage_outputs=missing))
    with pytest.raises(ValueError, match="give file"):
        PseudoLabels()
    with pytest.raises(ValueError, match="min_confidence"):
        PseudoLabels(file="x.csv", min_confidence=1.5)
    (msg,) = PseudoLabels(file="pool.csv").data_check(tmp_path)
    assert "pseudo-label pool file not found" in msg and "REPLICATOR_DATA_DIR" in msg
    assert PseudoLabels(from_stage="teacher").data_check(tmp_path) == []
    with pytest.raises(ReplicatorError, match="no file"):
        PseudoLabels(from_stage="teacher").data_sources("pool", DataContext(tmp_path, 0, stage="teacher"))


def test_pseudo_labels_bad_csv_names_row(tmp_path):
    path = tmp_path / "pool.csv"
    path.write_text('id,prompt,response_a,response_b\n5,"[""hi""]","[""a""]","not json"\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        PseudoLabels(file=str(path)).data_sources("pool", DataContext(tmp_path, 0))
    assert e.value.problems[0][:2] == ("5", "response_b")


def test_pool_labels_are_the_mean_of_several_labellers(tmp_path):
    """2nd [R2]: the stage-2 pseudo-labels are the mean of three stage-1 models' predictions."""
    from replicator.core.errors import ReplicatorError
    from replicator.core.rows import DataContext, make_row
    from replicator.plugins.pseudo_labels import PseudoLabels

    pool = [make_row(f"pool-{i}", [f"question {i}"], ["a"], ["b"]) for i in range(3)]
    rows = [{k: v for k, v in r.items() if k != "label"} for r in pool]
    outs = {"m0": {"pool": {"pool-0": [0.6, 0.2, 0.2], "pool-1": [0.1, 0.8, 0.1], "pool-2": [0.3, 0.3, 0.4]},
                   "pool_rows": rows},
            "m1": {"pool": {"pool-0": [0.2, 0.6, 0.2], "pool-1": [0.1, 0.6, 0.3], "pool-2": [0.2, 0.2, 0.6]},
                   "pool_rows": rows}}
    ctx = DataContext(tmp_path, 0, stage="stage2", stage_outputs=outs)
    got = {r["id"]: r["label"] for r in PseudoLabels(from_stage=["m0", "m1"]).data_sources("train", ctx)}
    assert (got["pool-0"] == pytest.approx([0.4, 0.4, 0.2])
            and got["pool-2"] == pytest.approx([0.25, 0.25, 0.5]))
    one = {r["id"]: r["label"] for r in PseudoLabels(from_stage="m0").data_sources("train", ctx)}
    assert one["pool-0"] == pytest.approx([0.6, 0.2, 0.2])
    del outs["m1"]["pool"]["pool-1"]
    with pytest.raises(ReplicatorError, match="stage 'm1' has no pool prediction for row pool-1"):
        PseudoLabels(from_stage=["m0", "m1"]).data_sources("train", ctx)
    assert PseudoLabels(from_stage=["m0", "m1"]).data_sources("train",
                                                              DataContext(tmp_path, 0, stage="m1")) is None
