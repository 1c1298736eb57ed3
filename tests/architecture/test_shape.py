"""The shape of core/ and plugins/: no function over 60 lines, logging instead of print(), no plugin
imports or inherits from another, and no core module names a plugin: a shared toggle is declared by
the plugin module that implements the technique (``SHARED_TOGGLES``), or by core/config/toggles.py for
recipe sections."""

from __future__ import annotations

import ast
from pathlib import Path

from replicator.core.config import toggles
from replicator.core.config.catalogue import BUILTINS, catalogue
from replicator.core.config.toggles import SHARED

from ..conftest import ROOT

CORE = ROOT / "core"


#: data constants of the row schema that happen to be plugin names (core/rows.py): ``COMPETITION_SOURCE``
#: (the ``source`` label of competition rows, hashed into pair keys) and ``SWAPPED_VIEW`` (a column prefix of
#: committed per-row prediction files); each plugin takes its name from them, so they stay where they are
PENDING = {"core/rows.py"}


def _is_builtins_table(node: ast.AST) -> bool:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    else:
        return False
    return any(isinstance(t, ast.Name) and t.id == "BUILTINS" for t in targets)


def plugin_names_in(path: Path, names: set[str]) -> list[str]:
    """``line: 'name'`` of each string literal of ``path`` that is the name of a plugin, except in the
    catalogue's own table of the built-in plugins (``BUILTINS = {name: "module:Class"}``)."""
    tree = ast.parse(path.read_text())
    table = {id(n) for node in ast.walk(tree) if _is_builtins_table(node) for n in ast.walk(node)}
    return [f"{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in names and id(n) not in table]


def test_no_core_module_names_a_plugin():
    names = set(BUILTINS)
    found = {p.relative_to(ROOT).as_posix(): plugin_names_in(p, names) for p in sorted(CORE.rglob("*.py"))}
    named = [f"{f}:{hit}" for f, hits in found.items() if f not in PENDING for hit in hits]
    assert named == [], "core modules naming a plugin (declare it in the plugin's module instead)"
    stale = [f for f in sorted(PENDING) if not found.get(f)]
    assert stale == [], "PENDING entries that no longer name a plugin: remove them"
    # the toggles' module names none even in prose (its docstring, comments, messages)
    text = (CORE / "config" / "toggles.py").read_text()
    assert [n for n in sorted(names) if n in text] == []


def test_the_plugin_name_check_finds_one(tmp_path):
    """The check above can fail: a literal plugin name is found; the BUILTINS table and prose are not."""
    probe = tmp_path / "probe.py"
    probe.write_text('BUILTINS: dict = {"swap_ab": "m:C"}\nUSE = {"use": "swap_ab"}\n"""uses swap_ab"""\n')
    assert plugin_names_in(probe, {"swap_ab"}) == ["2: 'swap_ab'"]


#: toggle -> the plugin module that declares it
PLUGIN_TOGGLES = {"swap": "swap_ab", "tta": "swap_ab", "focal": "focal_loss",
                  "label_smoothing": "label_smoothing", "aux_names": "aux_model_heads",
                  "lengths": "plain_turns", "temperature": "calibration"}


def test_builtin_toggles_come_from_the_plugins_that_implement_them():
    for name in SHARED:
        module = SHARED.declared_in(name)
        if name in PLUGIN_TOGGLES:
            assert module == f"replicator.plugins.{PLUGIN_TOGGLES[name]}", name
        else:
            assert module == "replicator.core.config.toggles" and SHARED[name] in toggles.CORE, name
    assert set(PLUGIN_TOGGLES) < set(SHARED)


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            out.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_no_plugin_imports_another_plugin_and_the_library_imports_no_plugin():
    files = sorted((ROOT / "plugins").glob("*.py")) + sorted((ROOT / "core" / "lib").glob("*.py"))
    assert len(files) > 25
    for f in files:
        bad = [m for m in _imports(f) if m.startswith((".", "replicator.plugins"))]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_no_plugin_class_inherits_from_anything_but_object():
    for name, cls in catalogue().items():
        assert cls.__bases__ == (object,), f"{name}: {cls.__qualname__} inherits from {cls.__bases__}"
    for f in sorted((ROOT / "plugins").glob("*.py")):  # module-level classes: plugins and their value types
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                assert not node.bases, f"{f.name}: class {node.name} has a base class"


MAX_FUNCTION_LINES = 60


def _functions():
    import ast

    for f in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{f.relative_to(CORE).as_posix()}:{node.name}", node.end_lineno - node.lineno + 1, node


def test_no_function_in_core_is_over_60_lines():
    over = {name: n for name, n, _ in _functions() if n > MAX_FUNCTION_LINES}
    assert not over, "functions over 60 lines in core/: " + ", ".join(f"{k} ({v})"
                                                                      for k, v in sorted(over.items()))


def test_core_logs_instead_of_printing():
    import ast

    prints = [f"{f.name}:{node.lineno}" for f in sorted(CORE.rglob("*.py"))
              for node in ast.walk(ast.parse(f.read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert not prints, f"print() in core/ (use logging.getLogger(__name__)): {prints}"
