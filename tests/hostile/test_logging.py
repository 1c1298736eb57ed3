"""No logging into closed streams (issue 24): the command line's log handler writes to whatever
``sys.stderr`` is when a record comes. A command run in-process (``CliRunner``, as the tests run them) used to
leave a handler holding the runner's stderr, closed when the command returned, and the next record of any
``replicator.*`` logger printed ``--- Logging error --- ValueError: I/O operation on closed file`` (seen in CI
from ``core/run/pipeline.py``)."""

from __future__ import annotations

import logging

from .conftest import HOSTILE_RECIPE
from .helpers import invoke


def test_records_after_an_in_process_command_go_to_the_current_stderr(tmp_path, isolated, capsys):
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(HOSTILE_RECIPE, encoding="utf-8")
    for args in (["show", recipe], ["plugins"], ["show", tmp_path / "missing.yaml"]):
        invoke(args)
        logging.getLogger("replicator.core.run.pipeline").warning("a record after `%s`", args[0])
        err = capsys.readouterr().err
        assert "Logging error" not in err and "closed file" not in err, err
        assert f"a record after `{args[0]}`" in err, err


def test_the_handler_is_replaced_not_added_and_follows_a_replaced_stderr(monkeypatch):
    import io
    import sys

    from replicator.core.util.logs import ROOT, setup

    setup(0)
    setup(0)
    ours = [h for h in logging.getLogger(ROOT).handlers if getattr(h, "_replicator_handler", False)]
    assert len(ours) == 1
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    logging.getLogger("replicator.x").warning("to the stderr of now")
    assert "to the stderr of now" in buf.getvalue()
    buf.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    logging.getLogger("replicator.x").warning("after the old one closed")
    assert "after the old one closed" in sys.stderr.getvalue()
