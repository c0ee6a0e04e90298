"""Names as the user's code writes them: a gradient call's targets and sources read from the call's text.

``tape.gradient(loss, [x, z])`` names its target ``loss`` and its sources ``x`` and ``z``; a
Keras variable is named by its path, a ``tf.Variable`` by its name without ``:0``.
"""

from __future__ import annotations

import ast
import linecache
import re
from collections.abc import Sequence
from typing import Any, Final

from flowcheck.source.lines import SourceLine

__all__ = ["call_index", "is_default_name", "shown_name", "source_name", "target_names", "tensor_labels", "unique", "watch_labels"]


def source_name(obj: Any) -> str:
    """A source's display name: Keras path, ``tf.Variable`` name without ``:0``, or tensor name."""
    path = getattr(obj, "path", None)
    if isinstance(path, str) and path:
        return path
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name[:-2] if name.endswith(":0") else name
    return type(obj).__name__


# A name TensorFlow makes up when the code gives none: ``tf.Variable(x)`` is ``Variable``, ``Variable_1``.
_DEFAULT_NAME: Final = re.compile(r"^(?:.*/)?(?:Variable|Placeholder)(?:_\d+)?(?::\d+)?$")


def is_default_name(name: str) -> bool:
    """Whether ``name`` is one TensorFlow gave because the code named nothing (``Variable_1``)."""
    return bool(_DEFAULT_NAME.match(name))


def shown_name(name: str, written: str | None) -> str:
    """A variable's name at a gradient call: its own, or how the call writes it (``image`` of
    ``tape.gradient(loss, image)``) when its own is one TensorFlow made up (``Variable``)."""
    return written if written and is_default_name(name) else name


def unique(names: Sequence[str], repeat: str = "{name} ({n})") -> list[str]:
    """The names with repeats told apart, in order: ``kernel``, ``kernel (2)``, ... (``repeat`` formats them)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else repeat.format(name=name, n=seen[name]))
    return out


# The gradient calls, and where each takes its sources positionally (TF1's minimize takes global_step second).
_CALLS: Final = {"gradient": 1, "jacobian": 1, "batch_jacobian": 1, "gradients": 1, "hessians": 1, "compute_gradients": 1,
                  "minimize": None}


def target_names(source: SourceLine | None, targets: Sequence[Any], nth: int = 0) -> tuple[str, ...]:
    """How the user wrote the targets in the call (``"loss"``), else the tensors' names (``nth``: the
    call's place among the gradient calls on its line)."""
    fallback = tuple(source_name(t) for t in targets)
    expression = _argument(source, 0, ("target", "ys", "loss"), nth) if source is not None else None
    if expression is None:
        return fallback
    if len(targets) == 1:
        return (ast.unparse(expression),)
    if isinstance(expression, (ast.List, ast.Tuple)) and len(expression.elts) == len(targets):
        return tuple(ast.unparse(e) for e in expression.elts)
    return tuple(f"{ast.unparse(expression)}[{i}]" for i in range(len(targets)))


def tensor_labels(source: SourceLine | None, count: int, nth: int = 0) -> list[str | None]:
    """How the user wrote each source in the call, where it is a plain list of names (``[x, z]``) or a dict
    with string keys (``{'x': x, 'z': z}``, in the key order ``tf.nest`` flattens it) (``nth``: the call's place among the gradient calls on its line)."""
    expression = _argument(source, 1, ("sources", "source", "xs", "var_list"), nth) if source is not None else None
    if isinstance(expression, (ast.List, ast.Tuple)) and len(expression.elts) == count:
        return [ast.unparse(e) for e in expression.elts]
    if isinstance(expression, ast.Dict) and len(expression.values) == count:  # {'x': x, 'y': y}: flattened by key
        keys = [k.value if isinstance(k, ast.Constant) and isinstance(k.value, str) else None for k in expression.keys]
        if None not in keys and len(set(keys)) == count:
            return [ast.unparse(v) for _, v in sorted(zip(keys, expression.values), key=lambda kv: str(kv[0]))]
    if expression is not None and count == 1 and isinstance(expression, ast.Name):
        return [expression.id]
    return [None] * count


def _argument(source: SourceLine, index: int, keywords: tuple[str, ...], nth: int = 0) -> ast.expr | None:
    """Argument ``index`` (0: the targets, 1: the sources) of the line's ``nth`` gradient call (counted
    modulo their number: ``u_t, u_x = tape.gradient(u, t), tape.gradient(u, x)``), or its keyword."""
    text = ""
    for offset in range(6):  # a call spread over a few lines
        line = linecache.getline(source.file, source.line + offset)
        if not line:
            break
        text += line
        try:
            tree = ast.parse(text.strip())
        except SyntaxError:
            continue
        calls = sorted(
            ((n, n.func.attr) for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _CALLS),
            key=lambda call: (call[0].lineno, call[0].col_offset),
        )
        if not calls:
            return None
        node, verb = calls[nth % len(calls)]
        position = index if index == 0 else _CALLS[verb]
        if position is not None and len(node.args) > position:
            return node.args[position]
        return next((k.value for k in node.keywords if k.arg in keywords), None)
    return None


def watch_labels(source: SourceLine | None, nth: int, count: int) -> list[str | None]:
    """How the line's ``nth`` ``watch(...)`` call (0-based, in the line's order: ``tape.watch(t);
    tape.watch(x)``; counted modulo their number) writes each of the ``count`` objects it watches: ``t``, or ``a`` and ``b`` of
    ``[a, b]``; None where it cannot tell (an expression, a structure of another size)."""
    text = linecache.getline(source.file, source.line).strip() if source is not None else ""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return [None] * count
    calls = sorted(
        (n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
         and n.func.attr == "watch" and len(n.args) == 1),
        key=lambda n: n.col_offset,
    )
    if not calls:
        return [None] * count
    argument = calls[nth % len(calls)].args[0]  # a watch in a loop is met again at each iteration
    if isinstance(argument, (ast.List, ast.Tuple)) and len(argument.elts) == count:
        return [ast.unparse(e) if isinstance(e, (ast.Name, ast.Attribute)) else None for e in argument.elts]
    if count == 1 and isinstance(argument, (ast.Name, ast.Attribute)):
        return [ast.unparse(argument)]
    return [None] * count


def call_index(source: SourceLine | None, column: int | None) -> int:
    """The place, among the gradient calls on the line, of the one starting at ``column`` (0-based,
    in the line as written): ``1`` for the second of ``tape.gradient(u, t), tape.gradient(u, x)``."""
    starts = call_starts(source) if column is not None else []
    return starts.index(column) if column in starts else 0


def call_starts(source: SourceLine | None) -> list[int]:
    """The 0-based columns where the gradient calls written on ``source``'s line start, in order."""
    raw = linecache.getline(source.file, source.line) if source is not None else ""
    text = raw.strip()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    indent = len(raw) - len(raw.lstrip())
    return sorted(
        n.col_offset + indent for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _CALLS
    )
