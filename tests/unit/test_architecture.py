"""The package's shape, kept by tests: import contracts, no import cycles, mypy, short functions.

docs/architecture.md describes the layers; ``.importlinter`` states them as contracts. These tests run
in the ordinary suite, so a change that breaks a boundary fails like any other regression.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "operator"
PACKAGES = ("batchop", "batchwire", "localbatch", "devstack")
MAX_FUNCTION_LINES = 60


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"],
        cwd=ROOT,
        env={"PYTHONPATH": str(SOURCE), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan), i.e. every import cycle."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    """Any cycle among the modules under operator/, function-local imports included."""
    sys.path.insert(0, str(SOURCE))
    try:
        graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    finally:
        sys.path.remove(str(SOURCE))
    # A package's __init__ importing its own submodules is not a cycle between concerns.
    for module in list(graph.modules):
        for imported in list(graph.find_modules_directly_imported_by(module)):
            if imported.startswith(module + ".") or module.startswith(imported + "."):
                graph.remove_import(importer=module, imported=imported)
    assert _cycles(graph) == []


def test_cycle_detection_finds_a_cycle() -> None:
    """The detector itself: a two-module cycle and a three-module one are reported, a chain is not."""
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "a"), ("c", "d"), ("d", "e"), ("e", "c"), ("f", "g")]:
        graph.add_import(importer=importer, imported=imported)
    assert sorted(_cycles(graph)) == [("a", "b"), ("c", "d", "e")]


def test_mypy_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", "/dev/null"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _long_functions(tree: ast.AST, limit: int) -> list[tuple[str, int, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - start + 1
            if length > limit:
                out.append((node.name, node.lineno, length))
    return out


@pytest.mark.parametrize("package", ["batchop"])
def test_functions_are_short(package: str) -> None:
    too_long = []
    for path in sorted((SOURCE / package).rglob("*.py")):
        for name, line, length in _long_functions(ast.parse(path.read_text()), MAX_FUNCTION_LINES):
            too_long.append(f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)")
    assert too_long == [], "\n".join(too_long)


def test_long_function_check_counts_lines() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(70))
    tree = ast.parse(f"def long():\n{body}\n\ndef short():\n    return 1\n")
    assert _long_functions(tree, MAX_FUNCTION_LINES) == [("long", 1, 71)]
