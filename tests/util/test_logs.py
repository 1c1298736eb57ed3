"""Logging setup (core/util/logs.py): levels per verbosity, one handler on the ``replicator`` logger,
short module names, transformers kept quiet in a block, noisy imports kept off stdout."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from replicator.core.util import logs


@pytest.fixture()
def clean_logger(monkeypatch):
    """The ``replicator`` logger's handlers and level restored after the test; no trace variable."""
    logger = logging.getLogger(logs.ROOT)
    handlers, level = list(logger.handlers), logger.level
    monkeypatch.setenv(logs.TRACE_ENV, "placeholder")  # recorded: teardown restores it (or its absence)
    monkeypatch.delenv(logs.TRACE_ENV)
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _ours(logger):
    return [h for h in logger.handlers if getattr(h, logs._HANDLER_FLAG, False)]


@pytest.mark.parametrize(("verbosity", "level"), [(-3, logging.WARNING), (-1, logging.WARNING),
                                                  (0, logging.INFO), (1, logging.DEBUG), (4, logging.DEBUG)])
def test_level_of(verbosity, level):
    assert logs.level_of(verbosity) == level


def test_setup_sets_the_level_and_replaces_its_handler(clean_logger):
    foreign = logging.NullHandler()
    clean_logger.addHandler(foreign)
    assert logs.setup(-1) is clean_logger
    assert clean_logger.level == logging.WARNING and len(_ours(clean_logger)) == 1
    logs.setup(0)
    assert clean_logger.level == logging.INFO
    assert len(_ours(clean_logger)) == 1, "a second setup must replace its handler, not add one"
    assert foreign in clean_logger.handlers, "handlers set up by others are kept"
    assert os.environ.get(logs.TRACE_ENV) is None, "the hook trace is only for -v"


def test_setup_verbose_turns_on_debug_and_the_trace(clean_logger):
    logs.setup(1)
    assert clean_logger.level == logging.DEBUG
    assert os.environ[logs.TRACE_ENV] == "1"


def test_setup_writes_short_names_to_stderr(clean_logger, capsys):
    logs.setup(0)
    logging.getLogger("replicator.core.run.pipeline").info("stage %s done", "main")
    logging.getLogger("replicator.plugins.swap_ab").debug("hidden at INFO")
    logging.getLogger("replicator.plugins.swap_ab").warning("careful")
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["[run.pipeline] stage main done", "[plugins.swap_ab] careful"]


def test_setup_quiet_hides_info(clean_logger, capsys):
    logs.setup(-1)
    logging.getLogger("replicator.core.data").info("progress")
    logging.getLogger("replicator.core.data").error("broken")
    assert capsys.readouterr().err.splitlines() == ["[data] broken"]


def test_setup_verbose_format_has_time_and_level(clean_logger, capsys):
    logs.setup(2)
    logging.getLogger("replicator.core.model.tiny").debug("built")
    line = capsys.readouterr().err.strip()
    assert line.endswith(" DEBUG [model.tiny] built")
    assert line[:4].isdigit()  # asctime first


def test_quiet_transformers_restores_verbosity_and_progress_bars():
    from transformers.utils import logging as hf_logging

    before, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    try:
        with logs.quiet_transformers():
            assert hf_logging.get_verbosity() == hf_logging.ERROR
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() == hf_logging.INFO
        assert hf_logging.is_progress_bar_enabled()
        with pytest.raises(RuntimeError), logs.quiet_transformers():
            raise RuntimeError("load failed")
        assert hf_logging.get_verbosity() == hf_logging.INFO, "restored after an error too"
        hf_logging.disable_progress_bar()
        with logs.quiet_transformers():
            pass
        assert not hf_logging.is_progress_bar_enabled(), "bars that were off stay off"
    finally:
        hf_logging.set_verbosity(before)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


NOISY = '''
import os
print("BANNER from a noisy package")
os.environ["NOISY_SET_BY_IMPORT"] = "yes"
os.environ.pop("NOISY_KEEP_ME", None)
IMPORTS = globals().get("IMPORTS", 0) + 1
'''


def test_import_quietly_keeps_the_console_clean_and_restores_the_environment(tmp_path, monkeypatch, capsys,
                                                                            caplog):
    name = "replicator_test_noisy_pkg"
    (tmp_path / f"{name}.py").write_text(NOISY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NOISY_KEEP_ME", "kept")
    monkeypatch.delenv("NOISY_SET_BY_IMPORT", raising=False)
    monkeypatch.setattr(logging.getLogger(logs.ROOT), "handlers", [])  # none left by an earlier command
    caplog.set_level(logging.DEBUG, logger=logs.__name__)
    try:
        logs.import_quietly(name)
        out, err = capsys.readouterr()
        assert out == "" and err == ""
        assert "BANNER from a noisy package" in caplog.text, "kept in the debug log"
        assert name in sys.modules
        assert "NOISY_SET_BY_IMPORT" not in os.environ
        assert os.environ["NOISY_KEEP_ME"] == "kept"
        logs.import_quietly(name)  # already imported: not imported again
        assert sys.modules[name].IMPORTS == 1
        assert capsys.readouterr() == ("", "")
    finally:
        sys.modules.pop(name, None)


def test_import_quietly_ignores_a_package_that_is_not_installed(capsys):
    name = "replicator_test_no_such_package_here"
    logs.import_quietly(name)
    assert name not in sys.modules
    assert capsys.readouterr() == ("", "")

