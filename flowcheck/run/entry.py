"""What ``flowcheck run`` executes: a script's file (``python train.py``) or a package's module
(``python -m proj.train``), with ``sys.argv[0]`` and ``sys.path[0]`` as Python sets them for each.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import runpy
import sys
from dataclasses import dataclass

from flowcheck.errors import TargetLoadError
from flowcheck.source.files import check_file, compile_python
from flowcheck.source.lines import display_path

__all__ = ["Entry", "import_time_environment", "module_entry", "package_hint", "script_entry"]

# Read by TensorFlow once, as it is imported, which flowcheck does before the script runs: a script
# setting them at its top (quiet C++ logs, oneDNN off for exact numerics) has them set first.
_READ_AT_IMPORT = frozenset({"TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "TF_USE_LEGACY_KERAS"})


@dataclass(frozen=True)
class Entry:
    """The code ``flowcheck run`` runs as ``__main__``.

    Attributes:
        full: The absolute path of its file.
        shown: Its name in the report: the script's path as given, or the module's file.
        argv0: ``sys.argv[0]`` while it runs (``python -m`` gives the module's full path).
        path0: What goes first on ``sys.path`` (the script's folder; the current folder for ``-m``).
        module: The dotted module name (``-m``), else None.
    """

    full: str
    shown: str
    argv0: str
    path0: str
    module: str | None = None

    def run(self) -> None:
        """Run it as ``__main__``, as Python runs it."""
        if self.module is None:
            runpy.run_path(self.full, run_name="__main__")
        else:
            runpy.run_module(self.module, run_name="__main__", alter_sys=True)


def script_entry(script: str) -> Entry:
    """A script file, checked as ``analyze`` checks one (a syntax error said in one line).

    Raises:
        TargetLoadError: it is not a readable Python file.
    """
    full = check_file(script)
    compile_python(script, full)
    return Entry(full, script, script, os.path.dirname(full))


def module_entry(name: str) -> Entry:
    """A module run as ``python -m NAME`` runs it (a package: its ``__main__``), the current folder first on
    ``sys.path``. Its parent packages are imported to find it, as Python does; call with the folder in place.

    Raises:
        TargetLoadError: no such module, or not one with Python source.
    """
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:  # a package: python -m runs __main__
            name = f"{name}.__main__"
            spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise TargetLoadError(f"cannot run -m {name}: {exc}") from exc
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise TargetLoadError(f"no module named {name!r} with Python source under {os.getcwd()} or on sys.path "
                              "(python -m NAME runs the same)")
    full = os.path.abspath(spec.origin)
    shown = display_path(full)
    compile_python(shown, full)
    return Entry(full, shown, full, os.getcwd(), name)


def package_hint(exc: BaseException, entry: Entry) -> str:
    """For a script of a package that imports its siblings relatively: how to run it as the module it is."""
    if entry.module is not None or not isinstance(exc, ImportError) or "no known parent package" not in str(exc):
        return ""
    parts = [os.path.splitext(os.path.basename(entry.full))[0]]
    folder = os.path.dirname(entry.full)
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    if len(parts) < 2:
        return ""
    name, where = ".".join(parts), display_path(folder)
    command = f"flowcheck run -m {name}" if where == "." else f"cd {where} && flowcheck run -m {name}"
    return f" (it is module {name} of a package: {command} runs it as python -m does)"


def import_time_environment(entry: Entry) -> None:
    """Set the variables TensorFlow reads at import (:data:`_READ_AT_IMPORT`) as the script's top
    sets them before its ``import tensorflow`` (``os.environ[NAME] = "3"`` or ``setdefault``), when
    TensorFlow is not imported yet; a script that cannot be parsed is left to fail as it runs."""
    if "tensorflow" in sys.modules:
        return
    try:
        with open(entry.full, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0] in ("tensorflow", "keras")
                for alias in node.names):
            return
        setting = _environ_setting(node)
        if setting is not None and setting[0] in _READ_AT_IMPORT:
            name, value, only_unset = setting
            if not (only_unset and name in os.environ):
                os.environ[name] = value


def _environ_setting(node: ast.stmt) -> tuple[str, str, bool] | None:
    """``os.environ["NAME"] = "value"`` -> (NAME, value, False); ``os.environ.setdefault(...)`` -> (..., True)."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript):
        target, key, value = node.targets[0].value, node.targets[0].slice, node.value
        only_unset = False
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute) \
            and node.value.func.attr == "setdefault" and len(node.value.args) == 2:
        target, (key, value), only_unset = node.value.func.value, node.value.args, True
    else:
        return None
    if ast.unparse(target) != "os.environ" or not all(isinstance(v, ast.Constant) and isinstance(v.value, str)
                                                        for v in (key, value)):
        return None
    return str(key.value), str(value.value), only_unset  # type: ignore[attr-defined]
