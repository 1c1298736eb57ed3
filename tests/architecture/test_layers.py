"""The shape of core/: the layers of pyproject.toml's import-linter contract hold, no two modules import
each other (directly or round a loop), and no function imports a project module."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
CODE = [ROOT / "core", ROOT / "plugins"]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_loop_between_any_two_modules():
    graph = grimp.build_graph("replicator.core", "replicator.plugins", include_external_packages=False,
                              exclude_type_checking_imports=True)
    # a package's __init__ may name its modules; a loop through an __init__ is a loop too
    assert len(graph.modules) > 50
    assert _cycles(graph) == []


def test_the_loop_check_finds_a_loop():
    """The check above can fail: a graph with a -> b -> c -> a has one component of three."""
    graph = grimp.ImportGraph()
    for a, b in (("x.a", "x.b"), ("x.b", "x.c"), ("x.c", "x.a"), ("x.c", "x.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["x.a", "x.b", "x.c"]]


def _project_imports_in_functions(path: Path) -> list[str]:
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if in_function and isinstance(child, ast.ImportFrom):
                if child.level or (child.module or "").startswith("replicator"):
                    found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            if in_function and isinstance(child, ast.Import):
                if any(a.name.startswith("replicator") for a in child.names):
                    found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def test_no_function_imports_a_project_module():
    files = [f for folder in CODE for f in sorted(folder.rglob("*.py"))]
    found = [hit for f in files for hit in _project_imports_in_functions(f)]
    assert found == []


def test_the_import_contract_holds():
    """`lint-imports` (import-linter) with pyproject.toml's contracts: layers, the plugin kit, no plugin in
    the core. .ci/run runs it too; here it runs with the tests."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_command_line_and_the_recipe_checks_start_without_the_heavy_libraries():
    """With every import at module top, the heavy ones stay in functions: importing the CLI and resolving
    a recipe with all its checks load none of them (a fresh interpreter, so nothing is loaded already;
    `replicate plan` does load torch, to build the model on the meta device)."""
    code = ("import sys; import replicator.core.cli; from replicator.core.config.recipe import resolve; "
            "resolve('2nd', ['tiny']); heavy = ('torch', 'transformers', 'peft', 'accelerate', 'datasets', "
            "'sklearn', 'matplotlib', 'pandas', 'deepspeed', 'gptqmodel', 'bitsandbytes'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
