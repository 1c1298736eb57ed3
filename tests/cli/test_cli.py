"""The ``replicate`` command line (core/cli.py): plugin listings, ``report``, verbosity options, and errors
that reach the terminal as one line, without a traceback."""

from __future__ import annotations

import json
import re
from importlib.metadata import version

from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.config import catalogue as manager
from replicator.core.config.catalogue import BUILTINS
from replicator.core.report.runs import default_out_dir, discover_runs

from ..conftest import QUICK, RECIPES
from ..report_runs import ablation, make_run, synthetic


def test_predict_errors_reach_the_command_line_without_a_traceback(finished_run, isolated, synthetic_data_dir,
                                                                    no_model):
    from typer.testing import CliRunner

    from replicator.core import cli

    root, rel = finished_run
    test = synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv"
    out = CliRunner().invoke(cli.app, ["predict", str(root / rel), str(test), "-o", str(isolated)])
    assert (out.exit_code == 2 and "is a folder; give a file name" in out.output
            and "Traceback" not in out.output)


def test_a_file_error_anywhere_in_run_is_named_without_a_traceback(isolated, monkeypatch):
    from typer.testing import CliRunner

    from replicator.core import cli

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", "/somewhere/metrics.json")

    monkeypatch.setattr(cli, "run_recipe", denied)  # the command calls the runner it imported
    out = CliRunner().invoke(cli.app, ["run", str(RECIPES / "smoke.yaml"), *QUICK])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "error: /somewhere/metrics.json: Permission denied" in out.output


def test_cli_plugins_lists_every_plugin_with_hooks_and_params():
    from typer.testing import CliRunner

    from replicator.core.cli import app

    out = CliRunner().invoke(app, ["plugins"]).output
    for name in BUILTINS:
        assert re.search(rf"^{name}  \[", out, re.M), name
    assert "- truncate:" in out and "- test_time:" in out and "- gamma:" in out


def test_cli_plugins_json_includes_distribution_and_version(monkeypatch):
    from importlib.metadata import EntryPoint
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from replicator.core.cli import app

    ep = EntryPoint(name="my_clip", value="replicator.plugins.clip_probs:ClipProbs",
                    group=manager.ENTRY_POINT_GROUP)
    # what importlib.metadata sets for installed ones
    ep = ep._for(SimpleNamespace(name="clip-extras", version="2.1.0"))
    monkeypatch.setattr(manager, "entry_points",
                        lambda group: [ep] if group == manager.ENTRY_POINT_GROUP else [])
    entries = {e["name"]: e for e in json.loads(CliRunner().invoke(app, ["plugins", "--json"]).output)}
    assert set(entries) == set(BUILTINS) | {"my_clip"}
    for name in BUILTINS:
        assert (entries[name]["distribution"], entries[name]["version"]) == ("arena-replicator",
                                                                              version("arena-replicator"))
    assert (entries["my_clip"]["distribution"], entries["my_clip"]["version"]) == ("clip-extras", "2.1.0")
    text = CliRunner().invoke(app, ["plugins"]).output
    assert re.search(r"^my_clip  \[postprocess\]  clip-extras 2\.1\.0$", text, re.M)
    assert re.search(rf"^kaggle_csv  \[data_sources, data_files, data_check\]  arena-replicator "
                     rf"{re.escape(version('arena-replicator'))}$", text, re.M)


def test_cli_report(tmp_path):
    runs = ablation(tmp_path / "reports", seeds=(1,))
    res = CliRunner().invoke(app, ["report", str(tmp_path / "reports" / "toy"), "--base",
                                   str(runs["base"][0])])
    assert res.exit_code == 0, res.output
    want = default_out_dir(discover_runs([tmp_path / "reports" / "toy"]), runs["base"][0])
    assert want.parent == tmp_path / "reports" / "toy" and want.name.startswith("report-")
    assert "| toy +focal |" in res.output and str(want / "report.html") in res.output
    assert (want / "report.md").is_file()
    # a report folder beside the runs is not mistaken for a run on the next call
    res = CliRunner().invoke(app, ["report", str(tmp_path / "reports" / "toy"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    bad = make_run(tmp_path / "reports", toggles=("focal",), seed=5, probs=synthetic(5, 1)[0],
                   labels=synthetic(5, 1)[1], data_hash="f" * 64)
    res = CliRunner().invoke(app, ["report", str(runs["base"][0]), str(bad), "--strict", "-o",
                                   str(tmp_path / "s")])
    assert res.exit_code == 2 and "error:" in res.output and bad.name in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "no such folder" in res.output


def test_cli_verbosity_options(monkeypatch, tmp_path):
    import logging
    import os

    from typer.testing import CliRunner

    from replicator.core import cli

    logger = logging.getLogger("replicator")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setenv("REPLICATOR_TRACE", "0")  # restored (to unset) after the test
    monkeypatch.delenv("REPLICATOR_TRACE")
    out = CliRunner().invoke(cli.app, ["show", str(RECIPES / "smoke.yaml"), "-q"])
    assert out.exit_code == 0 and logger.level == logging.WARNING and "REPLICATOR_TRACE" not in os.environ
    assert "checkpoint_every: 10" in out.output and "hub_id:" in out.output  # every default shown
    out = CliRunner().invoke(cli.app, ["-v", "show", str(RECIPES / "smoke.yaml")])
    assert out.exit_code == 0 and logger.level == logging.DEBUG and os.environ["REPLICATOR_TRACE"] == "1"
    assert len([h for h in logger.handlers if getattr(h, "_replicator_handler", False)]) == 1
    out = CliRunner().invoke(cli.app, ["show", str(RECIPES / "smoke.yaml"), "-q", "-v"])
    assert out.exit_code == 2 and "exclude each other" in out.output
    assert cli.logging_setup(quiet=True) is False and cli.logging_setup() is True
