"""nox sessions. ``nox -l`` lists them with these docstrings' first lines.

    nox -s tests            # the default test set (fast, offline) + real-data tests when
                            # ../shared/data exists
    nox -s lint             # ruff
    nox -s smoke            # the smoke recipe end to end on a real model and the real rows
    nox -s smoke -- model.base=embedded:gemma-3-270m train.max_rows=200
    nox -s solutions        # the six solution recipes at smoke scale (-t smoke) and their reports
    nox -s regen            # regenerate the pinned fixtures (prompt texts, recipes, reports) after a
                            # deliberate change
    nox -s gpu              # tests marked gpu (needs CUDA)
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

# torch is pinned in pyproject.toml (an unpinned torch pulls a multi-GB CUDA build)
INSTALL = (".[test,quant,gptq,deepspeed,track]",)
GPU_SMOKE_MODEL = "google/gemma-2-2b-it"
CPU_SMOKE_MODEL = "embedded:gemma-3-270m"
LINTED = ("core", "plugins", "tests", "noxfile.py", "benchmarks")
# the tests whose expected values are pinned with pytest-regressions (data_regression / num_regression)
PINNED = (
    "tests/lib/test_truncation.py", "tests/config/test_recipe.py", "tests/report/test_build.py",
    "tests/end_to_end/test_ablate.py",
)


def _data_env() -> dict:
    env = {}
    if "REPLICATOR_DATA_DIR" not in os.environ and os.path.isdir("../shared/data"):
        env["REPLICATOR_DATA_DIR"] = os.path.abspath("../shared/data")
    return env


@nox.session
def tests(session):
    """The default test set (offline, tiny models); real-data tests too when the data dir is found."""
    session.install("-e", *INSTALL)
    marks = [] if session.posargs else (["-m", "not gpu and not smoke"] if _data_env() or
                                        "REPLICATOR_DATA_DIR" in os.environ else [])
    session.run("python", "-m", "pytest", *marks, *session.posargs, env=_data_env())


@nox.session
def lint(session):
    """ruff on the code, the tests, the benchmarks and this file."""
    session.install("ruff")
    session.run("ruff", "check", *LINTED)


@nox.session
def smoke(session):
    """recipes/smoke.yaml end to end: gemma-2-2b-it on CUDA, else the embedded Gemma-3-270M.

    ``-- key=value ...`` are recipe overrides (e.g. model.base=...)."""
    session.install("-e", *INSTALL)
    cuda = session.run("python", "-c", "import torch; print(torch.cuda.is_available())", silent=True).strip()
    overrides = list(session.posargs)
    if any(o.startswith("model.base=") for o in overrides):
        session.log(
            "smoke model: from the command line (%s)",
            [o for o in overrides if o.startswith("model.base=")][0],
        )
    elif cuda == "True":
        session.log("smoke model: %s, because CUDA is available", GPU_SMOKE_MODEL)
        overrides.append(f"model.base={GPU_SMOKE_MODEL}")
    else:
        session.log("smoke model: %s, because no CUDA device was found", CPU_SMOKE_MODEL)
    session.run("replicate", "run", "recipes/smoke.yaml", *overrides, env=_data_env())


SOLUTIONS = ("1st", "2nd", "3rd", "5th", "9th", "16th")


@nox.session
def solutions(session):
    """Every solution recipe at smoke scale (``-t smoke``: embedded model, shared real rows, a CPU), then its
    report in reports/<recipe>/smoke-report/; ``-- 2nd 5th`` runs only those."""
    session.install("-e", *INSTALL)
    for name in session.posargs or SOLUTIONS:
        out = session.run("replicate", "-q", "run", f"recipes/{name}.yaml", "-t", "smoke", env=_data_env(),
                          silent=True)
        runs = [w for line in out.splitlines() if line.startswith(("finished:", "reused:", "member "))
                for w in line.split() if w.startswith("reports/")]  # the run, or each member's run
        session.run("replicate", "report", *dict.fromkeys(runs), "--out", f"reports/{name}/smoke-report")


@nox.session
def regen(session):
    """
    Regenerate the pinned fixtures after a deliberate change; review `git diff tests/` before committing.
    """
    session.install("-e", *INSTALL)
    files = [f for f in PINNED if os.path.exists(f)]
    session.run("python", "-m", "pytest", "-q", "--force-regen", *files, *session.posargs, env=_data_env(),
                success_codes=[0, 1])
    session.run("python", "-m", "pytest", "-q", *files, env=_data_env())
    session.log("fixtures regenerated: check `git diff --stat tests/` and explain each change in the commit")


@nox.session
def gpu(session):
    """Tests marked gpu (needs a CUDA device); figures from `python -m benchmarks.gpu_step`."""
    session.install("-e", *INSTALL)
    session.run("python", "-m", "pytest", "-m", "gpu", *session.posargs, env=_data_env())
