"""The package layout of issue 8: no import cycle, no reads of another object's privates.

Static checks over the source (``ast``), so that they cannot depend on what a
test happens to import first.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "eco"
# eco.nn is another engineer's layer; it moves to the public API at merge
MODULES = sorted(p for p in PACKAGE.glob("*.py"))
TESTS = sorted(p for p in (ROOT / "tests").glob("*.py"))


def _imports(path):
    """Names of the eco modules that `path` imports (at any depth of its code)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("eco."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("eco."))
    return out


def test_no_import_cycle():
    names = {p.stem for p in MODULES} - {"__init__"}
    graph = {p.stem: _imports(p) & names for p in MODULES if p.stem != "__init__"}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(stack + [m, n])}")
            if n not in state:
                visit(n, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_persistence_does_not_import_the_estimator():
    assert "svm" not in _imports(PACKAGE / "persistence.py")
    assert "svm" not in _imports(PACKAGE / "state.py")


def _private_reads(path):
    """``obj._name`` where obj is not self/cls and _name is not defined in the same file."""
    tree = ast.parse(path.read_text())
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") and node.attr not in own:
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            bad.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return bad


@pytest.mark.parametrize("path", MODULES + TESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_attribute_reads(path):
    assert _private_reads(path) == []
