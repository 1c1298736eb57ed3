"""The Hugging Face hub copy of the competition data (core/data/hub.py)."""

from __future__ import annotations

from replicator.core.data import hub

from ..source_files import good_rows


def test_load_hub_55k_validates(monkeypatch):
    import datasets

    recs = good_rows()
    for r in recs:
        r["id"] = int(r["id"])
        for k in ("winner_model_a", "winner_model_b", "winner_tie"):
            r[k] = int(r[k])
    ds = datasets.Dataset.from_list(recs)
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, split: ds)
    rows = hub.load_hub_55k("someone/arena-55k")
    assert [r["id"] for r in rows] == ["4410732", "90321577", "118290"]
    assert rows[1]["label"] == [0.0, 0.0, 1.0]


def test_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_reachable() is False
