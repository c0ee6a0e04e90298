"""The layout ARCHITECTURE.md describes, held: small modules and functions, no import cycle, and the
pure stages (analysis, rendering, the words, snapshots) free of TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "flowcheck"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# The stages that work on plain data: the graph's attributes and frozen dataclasses.
PURE = ("flowcheck.analysis", "flowcheck.render", "flowcheck.outputs", "flowcheck.snapshot",
        "flowcheck._model", "flowcheck._phrases", "flowcheck.errors")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The flowcheck modules ``name`` imports (a package's ``__init__`` for ``from package import x``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def test_no_module_is_over_the_size_the_style_allows() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_is_over_the_size_the_style_allows() -> None:
    long = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = length
    assert long == {}


def test_no_import_cycle_inside_the_package() -> None:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        graph.add_edges_from((name, other) for other in _imported(name, path, modules))
    assert list(nx.simple_cycles(graph)) == []


def test_the_pure_stages_import_no_tensorflow() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {PURE!r}:\n"
        "    importlib.import_module(name)\n"
        "import flowcheck.render.dot, flowcheck.render.html, flowcheck.render.svg, flowcheck.render.explorer\n"
        "import flowcheck.analysis.verdicts, flowcheck.analysis.sites, flowcheck.outputs.text\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_importing_flowcheck_does_not_import_tensorflow() -> None:
    code = "import sys, flowcheck; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_every_module_compiles_without_a_warning() -> None:
    # An invalid escape ('/\s+/' in the HTML report's script) warns once, when the module is first
    # compiled: in a user's suite run with -W error (or on Python 3.12's SyntaxWarning) that fails.
    import warnings

    for path in _modules().values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(path.read_text(encoding="utf-8"), str(path), "exec")  # raises on any warning
