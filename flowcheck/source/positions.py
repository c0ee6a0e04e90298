"""The exact place (line and column) of the call that made an op, under AutoGraph or not.

``op.traceback`` gives lines only. Python 3.11 knows, per instruction, the span of source it
runs (``code.co_positions()``); TensorFlow keeps the instruction (``f_lasti``) of each frame in
C++ but exposes only its line. So while flowcheck traces, an op callback
(``op_callbacks.add_op_callback``: called for every op created on this thread and on the replica
threads of a distribution strategy, which copy it) records the code object and instruction of
the user's innermost frame -- nothing else, and nothing is read until a barrier is reported.

Without AutoGraph that instruction's span is the call in the user's file. Under AutoGraph the
frame runs the generated code, where a whole statement is one line, and AutoGraph's source map
(``origin_info.create_source_map``) keeps one original line per generated line. There the span
picks the exact node of the generated statement (``ag__.converted_call(...)`` for a call); that
statement, with AutoGraph's rewrites undone (``ag__.ld(x)`` is ``x``, ``ag__.converted_call(f,
(a,), dict(k=v), fscope)`` is ``f(a, k=v)``, ``ag__.if_exp``, ``and_``, ``or_``, ``not_``), has
the same syntax tree as the user's statement, so the node is found at the same place in it.
Anything that does not match exactly gives no position (the traceback's line stays).
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from types import CodeType, FrameType
from typing import Any, Final

from flowcheck.source.lines import AUTOGRAPH_FILE, autograph_origin, is_library_file

__all__ = ["Position", "column_of", "op_position", "parsed", "recording", "statements_at"]

Position = tuple[str, int, int | None]  # file, 1-based line, 1-based column (None: unknown)

_RECORDED: weakref.WeakKeyDictionary[Any, dict[str, tuple[CodeType, int]]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


@contextmanager
def recording() -> Iterator[None]:
    """Record, for every op created in the block, the instruction of the user's code that made it."""
    from tensorflow.python.framework import op_callbacks

    op_callbacks.add_op_callback(_record)
    try:
        yield
    finally:
        op_callbacks.remove_op_callback(_record)


def _record(
    op_type: str, inputs: Any, attrs: Any, outputs: Any, op_name: str | None = None, graph: Any = None,
) -> None:
    if graph is None:
        return None  # an eager op: nothing to report later
    # The real name (a constant's op_name is the one asked for, before it was made unique).
    name = outputs[0].op.name if outputs else op_name
    frame: FrameType | None = sys._getframe(1)  # noqa: SLF001 -- the cheapest walk of the live stack
    while frame is not None:
        file = frame.f_code.co_filename
        if AUTOGRAPH_FILE in file or not is_library_file(file):
            with _LOCK:
                _RECORDED.setdefault(graph, {})[str(name)] = (frame.f_code, frame.f_lasti)
            break
        frame = frame.f_back
    return None


def op_position(op: Any) -> Position | None:
    """The user's file, line and column of the call that made ``op``, when it was recorded."""
    try:
        found = _RECORDED.get(op.graph, {}).get(op.name)
    except TypeError:  # a graph that cannot be weakly referenced was never recorded
        return None
    if found is None:
        return None
    code, lasti = found
    # The ops of one call (a Keras layer's) share its instruction. Keyed by identity: code objects
    # that differ only in their file compare equal (an edited copy of a file, AutoGraph's output).
    key = (id(code), lasti)
    hit = _RESOLVED.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    result = _resolve(code, lasti)
    if len(_RESOLVED) >= _RESOLVED_MAX:
        _RESOLVED.clear()
    _RESOLVED[key] = (code, result)
    return result


_RESOLVED: dict[tuple[int, int], tuple[CodeType, Position | None]] = {}
_RESOLVED_MAX: Final = 4096


def _resolve(code: CodeType, lasti: int) -> Position | None:
    span = _span(code, lasti)
    if span is None:
        return None
    if AUTOGRAPH_FILE in code.co_filename:
        try:
            return _original(code.co_filename, span)
        except (_NoMatch, RecursionError, ValueError):  # no sure answer: the traceback's line stays
            return None
    return code.co_filename, span[0], column_of(code.co_filename, span[0], span[2])


def _span(code: CodeType, lasti: int) -> tuple[int, int, int, int] | None:
    for i, position in enumerate(code.co_positions()):
        if i == lasti // 2:  # positions are per 2-byte code unit
            line, end_line, col, end_col = position
            if line is None or end_line is None or col is None or end_col is None:
                return None  # python -X no_debug_ranges
            return line, end_line, col, end_col
    return None


def column_of(file: str, line: int, byte_col: int) -> int:
    """The 1-based column, in characters, of a UTF-8 byte offset into ``line`` of ``file``."""
    # AST and code positions count UTF-8 bytes; a column counts characters.
    text = linecache.getline(file, line).encode("utf-8")
    return len(text[:byte_col].decode("utf-8", errors="replace")) + 1


# --- AutoGraph: from the generated statement back to the user's ---------------------------------

def _original(generated: str, span: tuple[int, int, int, int]) -> Position | None:
    origin = autograph_origin(generated, span[0])
    generated_code = parsed(generated)
    if origin is None or generated_code is None:
        return None
    file, line = origin
    node = generated_code.spans.get(span) or _node_at(generated_code.tree, span)
    original = parsed(file)
    if node is None or original is None:
        return None
    statements = statements_at(original, line)
    root = _user_root(node, generated_code.parents)
    found: list[ast.AST] = []
    plain = _undo(root, node, found)
    if not found:
        return None
    match = _match(plain, found[0], statements)
    if match is None:
        return None
    lineno, col = getattr(match, "lineno", None), getattr(match, "col_offset", None)
    if not isinstance(lineno, int) or not isinstance(col, int):
        return None
    return file, lineno, column_of(file, lineno, col)


@dataclass(frozen=True)
class _Parsed:
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]
    spans: dict[tuple[int, int, int, int], ast.AST]  # (line, end line, col, end col) -> innermost expression
    statements: tuple[ast.stmt, ...]


@lru_cache(maxsize=64)
def _parsed_at(path: str, stamp: tuple[int, int]) -> _Parsed | None:
    text = "".join(linecache.getlines(path))
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    parents: dict[ast.AST, ast.AST] = {}
    spans: dict[tuple[int, int, int, int], ast.AST] = {}
    statements = []
    for node in ast.walk(tree):  # outer nodes first: an inner node of the same span wins
        parents.update((child, node) for child in ast.iter_child_nodes(node))
        if isinstance(node, ast.expr):
            spans[(node.lineno, node.end_lineno or node.lineno, node.col_offset, node.end_col_offset or 0)] = node
        elif isinstance(node, ast.stmt):
            statements.append(node)
    return _Parsed(tree, parents, spans, tuple(statements))


def parsed(path: str) -> _Parsed | None:
    """``path`` parsed, with its spans and statements indexed (None when it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    linecache.checkcache(path)
    return _parsed_at(path, (st.st_mtime_ns, st.st_size))


def _node_at(tree: ast.AST, span: tuple[int, int, int, int]) -> ast.AST | None:
    """The smallest expression containing ``span`` (no expression has exactly that span)."""
    smallest: tuple[tuple[int, int], ast.AST] | None = None
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr):
            continue
        start = (node.lineno, node.col_offset)
        end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
        if start <= (span[0], span[2]) and (span[1], span[3]) <= end:
            size = (end[0] - start[0], end[1] - start[1] if end[0] == start[0] else end[1])
            if smallest is None or size <= smallest[0]:
                smallest = (size, node)
    return smallest[1] if smallest else None


def statements_at(source: _Parsed, line: int) -> list[ast.stmt]:
    """The innermost statements spanning ``line`` (several when ``a = f(); b = g()``)."""
    spanning = [s for s in source.statements if s.lineno <= line <= (s.end_lineno or s.lineno)]
    outer: set[int] = set()
    for statement in spanning:
        parent = source.parents.get(statement)
        while parent is not None:
            outer.add(id(parent))
            parent = source.parents.get(parent)
    return [s for s in spanning if id(s) not in outer]


# ag__ helpers whose call stands for a piece of the user's own expression.
_UNDONE: Final = frozenset({
    "ld", "ldu", "converted_call", "if_exp", "and_", "or_", "not_", "eq", "not_eq",
    "autograph_artifact", "with_function_scope",
})


def _ag_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        base = node.func.value
        if isinstance(base, ast.Name) and base.id == "ag__":
            return node.func.attr
    return None


def _user_root(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST:
    """The largest expression around ``node`` that comes from one user expression."""
    root = node
    while True:
        parent = parents.get(root)
        if parent is None or isinstance(parent, ast.stmt):
            return root  # (through keywords and comprehensions: they are parts of expressions)
        name = _ag_name(parent)
        if name is not None and name not in _UNDONE:  # ag__.if_stmt(test, ...), assert_stmt, ...
            return root.body if isinstance(root, ast.Lambda) else root
        root = parent


def _undo(node: ast.AST, target: ast.AST, found: list[ast.AST]) -> ast.AST:
    """A copy of ``node`` with AutoGraph's rewrites undone; ``found`` gets the copy of ``target``."""
    result = _undo_one(node, target, found)
    if node is target:
        found.append(result)
    return result


def _undo_one(node: ast.AST, target: ast.AST, found: list[ast.AST]) -> ast.AST:
    name = _ag_name(node)
    if name in _UNDONE and isinstance(node, ast.Call) and node.args:
        return _undo_helper(str(name), node.args, target, found)
    copy = type(node)()
    for field, value in ast.iter_fields(node):
        if isinstance(value, list):
            setattr(copy, field, [_undo(v, target, found) if isinstance(v, ast.AST) else v for v in value])
        elif isinstance(value, ast.AST):
            setattr(copy, field, _undo(value, target, found))
        else:
            setattr(copy, field, value)
    return copy


def _undo_helper(name: str, args: list[ast.expr], target: ast.AST, found: list[ast.AST]) -> ast.AST:
    """The user's expression behind ``ag__.<name>(*args)``."""

    def user(node: ast.AST) -> ast.expr:
        return _expr(_undo(node.body if isinstance(node, ast.Lambda) else node, target, found))

    if name in ("ld", "autograph_artifact"):
        return _undo(args[0], target, found)
    if name in ("ldu", "with_function_scope"):
        return user(args[0])
    if name == "converted_call" and len(args) >= 3:
        func = _expr(_undo(args[0], target, found))
        return ast.Call(func=func, args=_positional(args[1], target, found), keywords=_keywords(args[2], target, found))
    if name == "if_exp" and len(args) >= 3:
        return ast.IfExp(test=user(args[0]), body=user(args[1]), orelse=user(args[2]))
    if name in ("and_", "or_") and len(args) >= 2:
        op: ast.boolop = ast.And() if name == "and_" else ast.Or()
        values = [user(args[0]), user(args[1])]
        last = values[-1]
        right = args[1].body if isinstance(args[1], ast.Lambda) else args[1]
        if isinstance(last, ast.BoolOp) and type(last.op) is type(op) and _ag_name(right) == name:
            values[-1:] = last.values  # AutoGraph nests `a and b and c` to the right
        return ast.BoolOp(op=op, values=values)
    if name == "not_":
        return ast.UnaryOp(op=ast.Not(), operand=user(args[0]))
    if name in ("eq", "not_eq") and len(args) >= 2:
        cmp: ast.cmpop = ast.Eq() if name == "eq" else ast.NotEq()
        return ast.Compare(left=user(args[0]), ops=[cmp], comparators=[user(args[1])])
    raise _NoMatch(f"ag__.{name} with {len(args)} arguments")


class _NoMatch(Exception):
    """The generated code is not in a form whose user's expression flowcheck can tell."""


def _positional(node: ast.AST, target: ast.AST, found: list[ast.AST]) -> list[ast.expr]:
    # call_trees._ArgTemplateBuilder: f(a, *b, c) -> (a,) + tuple(b) + (c,)
    if isinstance(node, ast.Tuple):
        return [_expr(_undo(e, target, found)) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _positional(node.left, target, found) + _positional(node.right, target, found)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tuple" and len(node.args) == 1:
        return [ast.Starred(value=_expr(_undo(node.args[0], target, found)), ctx=ast.Load())]
    return [ast.Starred(value=_expr(_undo(node, target, found)), ctx=ast.Load())]


def _keywords(node: ast.AST, target: ast.AST, found: list[ast.AST]) -> list[ast.keyword]:
    # call_trees: f(k=v, **kw) -> dict(k=v, **kw); no keywords -> None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return [ast.keyword(arg=k.arg, value=_expr(_undo(k.value, target, found))) for k in node.keywords]
    return []


def _expr(node: ast.AST) -> ast.expr:
    if not isinstance(node, ast.expr):
        raise _NoMatch(f"{type(node).__name__} where an expression belongs")
    return node


def _match(plain: ast.AST, target: ast.AST, statements: list[ast.stmt]) -> ast.AST | None:
    """The node of the user's ``statements`` at ``target``'s place in ``plain``, if one is sure."""
    chain = _path(plain, target)
    if chain is None:
        return None
    nodes = [n for statement in statements for n in ast.walk(statement) if isinstance(n, ast.expr)]
    dumps: dict[int, str] = {}
    for sub in chain:  # the largest piece first: it is the least ambiguous
        key = ast.dump(sub)
        same = [n for n in nodes if type(n) is type(sub) and dumps.setdefault(id(n), ast.dump(n)) == key]
        if len(same) == 1:
            return _counterpart(sub, same[0], target)
        if same:
            return None  # the same expression twice: no way to tell which
    return None


def _path(root: ast.AST, target: ast.AST) -> list[ast.AST] | None:
    if root is target:
        return [root]
    for child in ast.iter_child_nodes(root):
        below = _path(child, target)
        if below is not None:
            return [root, *below]
    return None


def _counterpart(a: ast.AST, b: ast.AST, target: ast.AST) -> ast.AST | None:
    if a is target:
        return b
    for ca, cb in zip(ast.iter_child_nodes(a), ast.iter_child_nodes(b)):
        found = _counterpart(ca, cb, target)
        if found is not None:
            return found
    return None
