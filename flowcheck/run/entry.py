"""What ``flowcheck run`` executes: a script's file (``python train.py``) or a package's module
(``python -m proj.train``), with ``sys.argv[0]`` and ``sys.path[0]`` as Python sets them for each.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
from dataclasses import dataclass

from flowcheck.errors import TargetLoadError
from flowcheck.source.files import check_file, compile_python
from flowcheck.source.lines import display_path

__all__ = ["Entry", "module_entry", "package_hint", "script_entry"]


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
