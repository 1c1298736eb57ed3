"""nox sessions: tests, lint, smoke (and gpu, opt-in).

    nox -s tests            # the default test set (fast, offline)
    nox -s lint             # ruff
    nox -s smoke            # the smoke recipe end to end on a real model and the real rows
    nox -s smoke -- model.base=embedded:gemma-3-270m train.max_rows=200
    nox -s gpu              # tests marked gpu (needs CUDA)
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

# torch is pinned in pyproject.toml (an unpinned torch pulls a multi-GB CUDA build)
INSTALL = (".[test,quant]",)
GPU_SMOKE_MODEL = "google/gemma-2-2b-it"
CPU_SMOKE_MODEL = "embedded:gemma-3-270m"


def _data_env() -> dict:
    env = {}
    if "REPLICATOR_DATA_DIR" not in os.environ and os.path.isdir("../shared/data"):
        env["REPLICATOR_DATA_DIR"] = os.path.abspath("../shared/data")
    return env


@nox.session
def tests(session):
    session.install("-e", *INSTALL)
    session.run("python", "-m", "pytest", *session.posargs, env=_data_env())


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "core", "plugins", "tests", "noxfile.py", "benchmarks")


@nox.session
def smoke(session):
    """Run recipes/smoke.yaml: google/gemma-2-2b-it on CUDA (the design card's 2B smoke), else the
    embedded Gemma-3-270M. ``-- key=value ...`` are recipe overrides (e.g. model.base=...)."""
    session.install("-e", *INSTALL)
    cuda = session.run("python", "-c", "import torch; print(torch.cuda.is_available())", silent=True).strip()
    overrides = list(session.posargs)
    if any(o.startswith("model.base=") for o in overrides):
        session.log("smoke model: from the command line (%s)", [o for o in overrides if o.startswith("model.base=")][0])
    elif cuda == "True":
        session.log("smoke model: %s, because CUDA is available", GPU_SMOKE_MODEL)
        overrides.append(f"model.base={GPU_SMOKE_MODEL}")
    else:
        session.log("smoke model: %s, because no CUDA device was found", CPU_SMOKE_MODEL)
    session.run("replicate", "run", "recipes/smoke.yaml", *overrides, env=_data_env())


@nox.session
def gpu(session):
    session.install("-e", *INSTALL)
    session.run("python", "-m", "pytest", "-m", "gpu", *session.posargs, env=_data_env())
