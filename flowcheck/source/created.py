"""The user's line that created a variable a layer or module holds: ``self.w = self.add_weight(...)`` in its ``build``.

Read from the source of the holder's own classes (the user's files, never a library's), and only for
the variables a report lists as unused: a walk of a class's syntax tree per variable asked, no cost
per op.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import textwrap
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
    tree = _class_tree(cls)
    if tree is None:
        return None
    file, start, node = tree
    by_name = None
    for fn in (n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for statement in ast.walk(fn):
            line = _assigns(statement, attribute) if attribute else None
            if line is None and by_name is None and name and _named_maker(statement, name):
                by_name = _line(file, start + statement.lineno - 1, cls, fn)  # type: ignore[attr-defined]
            if line is not None:
                return _line(file, start + line - 1, cls, fn)
    return by_name


def _assigns(statement: ast.AST, attribute: str) -> int | None:
    """The line of ``self.<attribute> = <a call>`` (or ``self.<attribute>: T = <a call>``, or a list of calls)."""
    if isinstance(statement, ast.Assign):
        targets, value = statement.targets, statement.value
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        targets, value = [statement.target], statement.value
    else:
        return None
    hit = any(isinstance(t, ast.Attribute) and t.attr == attribute and isinstance(t.value, ast.Name)
              and t.value.id == "self" for t in targets)
    makes = any(isinstance(n, ast.Call) for n in ast.walk(value))
    return statement.lineno if hit and makes else None


def _named_maker(node: ast.AST, name: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return called in _MAKERS and any(
        k.arg == "name" and isinstance(k.value, ast.Constant) and k.value.value == name for k in node.keywords
    )


@lru_cache(maxsize=256)
def _class_tree(cls: type) -> tuple[str, int, ast.AST] | None:
    """A user's class: its file, first line and syntax tree (None for a library's, or without source)."""
    try:
        file = inspect.getsourcefile(cls)
        if file is None or is_library_file(file):
            return None
        lines, start = inspect.getsourcelines(cls)
        return file, start, ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):  # defined by exec, in a notebook cell, or unreadable
        return None


def _line(file: str, line: int, cls: type, fn: Any) -> SourceLine:
    return SourceLine(file, line, f"{cls.__name__}.{fn.name}", linecache.getline(file, line).strip())
