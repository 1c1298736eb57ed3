"""A quiet console (issue 23): each ``replicator`` log line printed once whatever a dependency adds to the
root logger, no third-party output on a tiny run (GPT-QModel and DeepSpeed are not even imported for it),
the single-run summary, and Ctrl-C saying how to resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest
from typer.testing import CliRunner

from replicator.core import cli
from replicator.core.run import pipeline

from ..conftest import QUICK, SMOKE

#: a tiny run of the smoke recipe, as ``replicate run recipes/smoke.yaml -t tiny`` with the quick sizes
TINY_RUN = ["run", str(SMOKE), "-t", "tiny", *QUICK]
#: a ``replicator`` log line: ``[module] message`` (the format of core/util/logs.py at -q and by default)
OURS = re.compile(r"^\[[\w.]+\] ")
#: what the third-party libraries printed on a model load before (issue 23)
NOISE = re.compile(r"GPT-?QModel|GIL is|Setting accelerator|Failed to load|_pytree|register_constant|"
                   r"FutureWarning|DeprecationWarning|UserWarning|logbar|tokenicer|DeepSpeed|torchao",
                   re.IGNORECASE)
#: the packages the probes of peft and accelerate imported on every model load (torchao and bitsandbytes are
#: still imported, by transformers' model code and by peft itself, their output captured)
PROBED = ("gptqmodel", "deepspeed")


def _replicate(args: list[str], before: str = "") -> subprocess.CompletedProcess:
    """``replicate ARGS`` in a fresh interpreter (what a dependency does on import stays out of the test
    process), after running ``before`` there; the environment is the test's (``isolated``)."""
    code = "\n".join(["import sys", before, "from replicator.core.cli import main",
                      "sys.argv = ['replicate', *sys.argv[1:]]", "main()"])
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def test_each_log_line_is_printed_once_after_gptqmodel_added_a_root_handler(isolated):
    pytest.importorskip("gptqmodel")
    p = _replicate(TINY_RUN, before="import gptqmodel, logging; assert logging.getLogger().handlers")
    assert p.returncode == 0, p.stderr[-3000:]
    ours = [line for line in _lines(p.stderr) if OURS.match(line)]
    assert ours and any("stage main" in line for line in ours), p.stderr[-3000:]
    twice = {line: n for line, n in Counter(ours).items() if n > 1}
    assert not twice, twice
    assert not [line for line in _lines(p.stderr) if "replicator." in line and not OURS.match(line)], \
        "a replicator record reached the root logger's handler"


@pytest.mark.parametrize("quiet", [True, False], ids=["-q", "default"])
def test_a_tiny_run_prints_no_third_party_output(isolated, quiet):
    probe = ("import atexit\n"  # which of them the run imported, at its end
             f"atexit.register(lambda: print('IMPORTED', [m for m in {PROBED!r} if m in sys.modules], "
             "file=sys.stderr))")
    p = _replicate([*TINY_RUN, *(["-q"] if quiet else [])], before=probe)
    assert p.returncode == 0, p.stderr[-3000:]
    err = [line for line in _lines(p.stderr) if not line.startswith("IMPORTED ")]
    assert "IMPORTED []" in p.stderr, "a library the tiny run does not use was imported: " + p.stderr[-300:]
    noise = [line for line in _lines(p.stdout) + err if NOISE.search(line)]
    assert not noise, noise
    if quiet:  # errors, warnings and the summary only: every stderr line is one of ours
        assert [line for line in err if not OURS.match(line)] == [], err
        assert p.stdout.startswith("finished: ")
    ours = [line for line in err if OURS.match(line)]
    assert not {line for line, n in Counter(ours).items() if n > 1}


def test_the_single_run_summary(isolated):
    out = CliRunner().invoke(cli.app, [*TINY_RUN, "-q"])
    assert out.exit_code == 0, out.output
    text = out.stdout
    first = text.splitlines()[0]
    m = re.fullmatch(r"finished: (\S+) \(in [^)]+\)", first)
    assert m, first
    run_dir = m[1]
    run_id = os.path.basename(run_dir)
    metrics = json.loads((isolated / "reports" / "smoke" / run_id / "metrics.json").read_text())
    rows = {line[4:20].strip(): line for line in text.splitlines() if line.startswith("    ")}
    refs = {label: key for key, label in cli.SUMMARY_ROWS if key in metrics}
    assert {"with TTA", "no TTA", "prior baseline", "length baseline", "style baseline"} <= set(refs)
    assert set(rows) == {"final", *refs}, text
    assert f"{metrics['final_log_loss']:.4f}" in rows["final"]
    for label, key in refs.items():
        value, delta = rows[label].split()[-2:]
        assert value == f"{metrics[key]:.4f}"
        assert delta == f"{metrics['final_log_loss'] - metrics[key]:+.4f}"
    assert f"on {metrics['n_valid_rows']} validation rows" in text
    assert not re.search(r"\d\.\d{5,}", text), "4 decimals, not raw JSON"
    assert f"artifacts: {isolated / 'artifacts' / 'smoke' / run_id}" in text
    assert f"  replicate report {run_dir}\n" in text
    assert f"  replicate predict {run_dir} test.csv -o submission.csv" in text

    again = CliRunner().invoke(cli.app, [*TINY_RUN, "-q"])
    assert again.exit_code == 0 and again.stdout.startswith(f"reused: {run_dir} (computed before in ")


def test_summary_lines_show_the_style_baseline_where_metrics_have_it(tmp_path):
    metrics = {"run_id": "r", "final_log_loss": 1.0, "tta_log_loss": 1.01, "log_loss": 1.02,
               "baseline_prior_log_loss": 1.0986, "baseline_length_log_loss": 1.05,
               "baseline_style_log_loss": 1.04004, "n_valid_rows": 222,
               "stages": {"a": {"seconds": 30.0}, "b": {"seconds": 95.0}}}
    lines = cli.summary_lines(tmp_path / "run", tmp_path / "art", metrics, reused=True, seconds=0.4)
    assert lines[0] == f"reused: {tmp_path / 'run'} (computed before in 2 min 5 s)"
    style = next(line for line in lines if "style baseline" in line).split()
    assert style[-2:] == ["1.0400", "-0.0400"]
    assert cli.summary_lines(tmp_path, tmp_path, {}, reused=False, seconds=3725)[0].endswith("(in 1 h 2 min)")


def test_ctrl_c_leaves_failed_json_interrupted_and_says_how_to_resume(isolated, monkeypatch):
    def interrupted(state, stage, progress):
        state.begin()
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_stage", interrupted)
    out = CliRunner().invoke(cli.app, [*TINY_RUN, "-q"])
    assert out.exit_code == 130, out.output
    assert "interrupted: rerun the same command to resume" in out.stderr
    assert "Traceback" not in out.output and "Aborted" not in out.output
    failed = json.loads(next((isolated / "reports" / "smoke").glob("*/failed.json")).read_text())
    assert failed["error"] == "KeyboardInterrupt" and failed["message"] == "interrupted"


def test_a_command_lets_the_replicator_logger_propagate_again_when_it_ends(isolated, caplog):
    """In one process (a test, a notebook) a command does not keep ``replicator`` records from the root
    logger after it ends (inside it, they print through its own handler only)."""
    import logging

    logger = logging.getLogger("replicator")
    assert logger.propagate
    out = CliRunner().invoke(cli.app, ["-v", "show", str(SMOKE)])
    assert out.exit_code == 0, out.output
    assert logger.propagate
    caplog.set_level(logging.INFO, logger="replicator")
    logging.getLogger("replicator.core.run.pipeline").info("seen by caplog")
    assert "seen by caplog" in caplog.text


NOISY = '''
import logging, sys, warnings
logging.basicConfig(level=logging.INFO)
print("BANNER on stdout")
print("note on stderr", file=sys.stderr)
warnings.warn("an API will change", FutureWarning)
logging.getLogger("noisy.child").warning("Failed to load something.so")
own = logging.getLogger("noisy_own")
own.propagate = False
own.addHandler(logging.StreamHandler(sys.stdout))
own.warning("Setting accelerator to CPU")
'''


def test_captured_import_keeps_everything_in_the_debug_log(tmp_path, monkeypatch, capsys, caplog):
    import logging

    from replicator.core.util import logs

    name = "replicator_test_noisy_logging_pkg"
    (tmp_path / f"{name}.py").write_text(NOISY)
    monkeypatch.syspath_prepend(str(tmp_path))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(logging.getLogger(logs.ROOT), "handlers", [])  # none left by an earlier command
    caplog.set_level(logging.DEBUG, logger=logs.__name__)
    try:
        logs.import_quietly(name)
        assert capsys.readouterr() == ("", "")
        assert (root.handlers, root.level) == (handlers, level), "basicConfig undone"
        debug = caplog.text
        for text in ("BANNER on stdout", "note on stderr", "FutureWarning: an API will change",
                     "Failed to load something.so", "Setting accelerator to CPU"):
            assert text in debug, text
        own = logging.getLogger("noisy_own").handlers[0]
        assert own.stream is sys.stderr, "a handler made in the block writes to stderr afterwards"
    finally:
        sys.modules.pop(name, None)
        logging.getLogger("noisy_own").handlers.clear()
