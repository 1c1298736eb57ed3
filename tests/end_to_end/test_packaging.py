"""The wheel maps core/, plugins/ and recipes/ into the replicator namespace exactly like the editable
install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from ..conftest import ROOT


def test_wheel_contains_the_namespace_and_imports_from_it(tmp_path):
    # build from a clean copy of the sources: pip builds in the source tree, and setuptools' build/
    # folder there keeps modules that were moved or deleted since the last build
    src = tmp_path / "src"
    for d in ("core", "plugins", "recipes"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, cwd=tmp_path,
                   env=dict(os.environ, PIP_NO_INPUT="1"))
    (wheel,) = (tmp_path / "dist").glob("arena_replicator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    sources = {f"replicator/{p.relative_to(ROOT).as_posix()}" for d in ("core", "plugins", "recipes")
               for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts}
    assert {n for n in names if n.endswith(".py")} == sources  # every module, and only those
    assert "replicator/core/hookspecs.py" in names and "replicator/plugins/swap_ab.py" in names
    assert "replicator/core/lib/truncation.py" in names and "replicator/core/lib/sources.py" in names
    assert not any(n.startswith(("core/", "plugins/", "tests/")) for n in names)
    assert "replicator/core/lib/model_configs/gemma-2-9b.json" in names  # `replicate plan` reads them
    shipped = {f"replicator/recipes/{p.relative_to(ROOT / 'recipes').as_posix()}"
               for p in (ROOT / "recipes").rglob("*.yaml")}
    assert shipped <= set(names) and "replicator/recipes/2nd.yaml" in names  # found by name from any folder
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "replicate = replicator.core.cli:app" in zipfile.ZipFile(wheel).read(entry).decode()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    code = ("import replicator.core as c, replicator.core.lib.truncation as t; "
            "from replicator.core.config.catalogue import catalogue; "
            "from replicator.core.config.recipe_files import find_recipe; "
            "print(c.__file__); print(t.__file__); print(len(catalogue().values())); "
            "print(find_recipe('2nd'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(target)), cwd=tmp_path).stdout.split()
    assert out[0].startswith(str(target)) and out[1].startswith(str(target)) and int(out[2]) >= 27
    assert out[3] == str(target / "replicator" / "recipes" / "2nd.yaml")
