"""The call that made an op, told from names when flowcheck did not see the op made.

A nested ``tf.function`` traced before flowcheck ran (the user trained a step first) keeps its
cached graph, so ``flowcheck.source.positions`` never recorded its ops. Their tracebacks still name the
functions between the user's statement and the op (``stop_gradient`` behind ``tf.stop_gradient``'s
wrappers). The call of the statement named like the nearest of them made the op, when exactly one
call has that name. Under AutoGraph the traceback's line may be any line of a multi-line
statement, so the call's own line replaces it; without AutoGraph the line is already exact and only
a call on that line is accepted. Ops made by an operator (``a * x``) or inside a Keras layer are
left alone: their nearest frames name no call of the statement.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from functools import lru_cache

from flowcheck.source.lines import SourceLine, autograph_converted
from flowcheck.source.positions import Position, column_of, parsed, statements_at

__all__ = ["guess_call"]


def guess_call(line: SourceLine, inner_names: Sequence[str]) -> Position | None:
    """The file, line and column of the call at ``line`` that leads into ``inner_names``.

    Args:
        line: The user's frame, as the op's traceback gives it.
        inner_names: The names of the frames inside it, outermost (nearest the user) first.
    """
    return _guess(line, tuple(inner_names))


@lru_cache(maxsize=1024)  # a diagram asks once per op drawn; the ops of one call share the answer
def _guess(line: SourceLine, inner_names: tuple[str, ...]) -> Position | None:
    source = parsed(line.file)
    if source is None:
        return None
    calls = [c for s in statements_at(source, line.line) for c in _own_calls(s)]
    chosen = None
    for name in inner_names:
        if name.startswith("__") or name.endswith("op_wrapper"):
            return None  # an operator or a callable object: the statement names no such call
        named = [c for c in calls if _callee(c) == name]
        if len(named) > 1:
            return None  # the same function twice: no way to tell which
        if named:
            chosen = named[0]
            break
    if chosen is None or (chosen.lineno != line.line and not autograph_converted(line)):
        return None
    return line.file, chosen.lineno, column_of(line.file, chosen.lineno, chosen.col_offset)


def _own_calls(statement: ast.stmt) -> Iterator[ast.Call]:
    """The calls of ``statement`` itself, not of the statements nested in it."""
    stack: list[ast.AST] = [statement]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call):
            yield node
        stack.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.stmt))


def _callee(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None
