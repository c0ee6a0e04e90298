"""The user's line that created a variable a layer or module holds: ``self.w = self.add_weight(...)`` in its ``build``.

Read from the source of the holder's own classes (the user's files, never a library's), and only for
the variables a report lists as unused: a walk of a class's syntax tree per variable asked, no cost
per op.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import os
from functools import lru_cache
from typing import Any

from flowcheck.source.lines import SourceLine, is_library_file

__all__ = ["creation_line"]

# Calls that make a variable: Keras's add_weight (add_variable, its Keras 2 name), keras.Variable, tf.Variable.
_MAKERS = frozenset({"add_weight", "add_variable", "Variable"})


def creation_line(holder: Any, attribute: str | None, name: str | None) -> SourceLine | None:
    """Where ``holder``'s class (or a user's base class) creates the variable it holds as ``attribute``
    (``self.spare = ...``), else one whose maker's ``name=`` is ``name``; None when not found."""
    for cls in type(holder).__mro__:
        found = _in_class(cls, attribute, name)
        if found is not None:
            return found
    return None


def _in_class(cls: type, attribute: str | None, name: str | None) -> SourceLine | None:
    file = _user_file(cls)
    try:
        tree = _module_tree(file, os.stat(file).st_mtime_ns) if file is not None else None
    except OSError:  # (no longer there)
        return None
    if file is None or tree is None:
        return None
    by_name = None
    for node in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__):
        for fn in (n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for statement in ast.walk(fn):
                if attribute and _assigns(statement, attribute):
                    return _line(file, statement.lineno, cls, fn)  # type: ignore[attr-defined]
                if by_name is None and name and _named_maker(statement, name):
                    by_name = _line(file, statement.lineno, cls, fn)  # type: ignore[attr-defined]
    return by_name


def _assigns(statement: ast.AST, attribute: str) -> bool:
    """Whether ``statement`` is ``self.<attribute> = <a call>`` (``self.<attribute>: T = ...``, a list of calls)."""
    if isinstance(statement, ast.Assign):
        targets, value = statement.targets, statement.value
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        targets, value = [statement.target], statement.value
    else:
        return False
    hit = any(isinstance(t, ast.Attribute) and t.attr == attribute and isinstance(t.value, ast.Name)
              and t.value.id == "self" for t in targets)
    makes = any(isinstance(n, ast.Call) for n in ast.walk(value))
    return hit and makes


def _named_maker(node: ast.AST, name: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return called in _MAKERS and any(
        k.arg == "name" and isinstance(k.value, ast.Constant) and k.value.value == name for k in node.keywords
    )


def _user_file(cls: type) -> str | None:
    """The file of a class the user wrote (None for a library's, or one without a file)."""
    try:
        file = inspect.getsourcefile(cls)
    except TypeError:  # a built-in class
        return None
    return None if file is None or is_library_file(file) else file


@lru_cache(maxsize=32)
def _module_tree(file: str, modified: int) -> ast.Module | None:
    """A user's file, parsed once per version (keyed by its path and time: no class or module kept alive)."""
    try:
        with open(file, encoding="utf-8") as handle:
            return ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):  # unreadable, or not Python source
        return None


def _line(file: str, line: int, cls: type, fn: Any) -> SourceLine:
    linecache.checkcache(file)
    return SourceLine(file, line, f"{cls.__name__}.{fn.name}", linecache.getline(file, line).strip())
