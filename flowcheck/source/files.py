"""A user's Python file, checked before it is run: it exists, is a ``.py`` file, and is readable text."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from types import CodeType

from flowcheck.errors import TargetLoadError

__all__ = ["check_file", "compile_python", "read_python", "training_at_import"]


def check_file(path: str) -> str:
    """The file's absolute path.

    Raises:
        TargetLoadError: it does not exist, is a directory, or is not a ``.py`` file.
    """
    if not path.strip():  # an unset shell variable (flowcheck run "$SCRIPT"): "" is the current directory
        raise TargetLoadError("the file name is empty; give a Python file (path/to/model.py[:NAME])")
    full = os.path.abspath(path)
    if not os.path.exists(full):
        raise TargetLoadError(f"no such file: {path}")
    if os.path.isdir(full):
        raise TargetLoadError(f"{path} is a directory; give a Python file (path/to/model.py[:NAME])")
    if not full.endswith(".py"):
        raise TargetLoadError(f"{path} is not a Python file; give a .py file (path/to/model.py[:NAME])")
    return full


def read_python(path: str, full: str) -> bytes:
    """The bytes of the file at ``full`` (``path`` as the user gave it, for errors).

    Raises:
        TargetLoadError: it cannot be read, or is not UTF-8 text without a coding cookie.
    """
    try:
        with open(full, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TargetLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # compile() would honour a coding cookie; without one, non-UTF-8 bytes mean "not Python"
        if b"coding" not in data[:200]:
            raise TargetLoadError(f"{path} is not a Python file: it is not UTF-8 text") from exc
    return data


def compile_python(path: str, full: str) -> CodeType:
    """The file's code, compiled as Python would run it (``path`` as the user gave it, for errors).

    Raises:
        TargetLoadError: it cannot be read, is not UTF-8 text, or has a syntax error (said with its
            line and code, as one line).
    """
    source = read_python(path, full)
    try:
        return compile(source, full, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = f":{exc.lineno}" if exc.lineno else ""
        text = f" ({exc.text.strip()})" if exc.text and exc.text.strip() else ""
        raise TargetLoadError(f"{path}{line}: {type(exc).__name__}: {exc.msg}{text}") from exc
    except ValueError as exc:  # Python 3.11: null bytes in the source
        raise TargetLoadError(f"{path} is not a Python file: {exc}") from exc


# The calls that train (or ask for a gradient): run at a module's top level, importing it trains.
# (Not minimize: a TF1 module builds its train op with it at import, and trains only in Session.run.)
_TRAINING_CALLS = frozenset({"fit", "train_on_batch", "apply_gradients", "gradient"})
# In a file that makes a TF1 session, its ``run`` trains (``sess.run(train_op)``, ``train_op.run()``),
# unless it only initializes (``sess.run(tf.global_variables_initializer())``, ``sess.run(init)``).
_SESSIONS = ("Session(", "MonitoredTrainingSession(", "SingularMonitoredSession(")
_NOT_SESSIONS = frozenset({"subprocess", "asyncio", "trio", "anyio", "uvicorn", "app"})
_INIT_NAMES = frozenset({"init", "init_op", "init_ops", "initializer", "init_all"})


def training_at_import(full: str) -> tuple[int, str] | None:
    """The first call that trains among the statements a file runs when imported (not in a function, a
    class or its ``if __name__ == "__main__":`` block): its line and code (None: importing it does not train).
    """
    try:
        with open(full, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    lines = source.splitlines()
    tf1 = any(mark in source for mark in _SESSIONS)
    steps = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)  # the file's own training steps
             and any(_trains(call, set(), tf1) for call in ast.walk(node))}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or (
                isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)):
            continue
        for call in _run_now(node):
            if isinstance(call, ast.Call) and _trains(call, steps, tf1):
                return call.lineno, lines[call.lineno - 1].strip()
    return None


def _trains(node: ast.AST, steps: set[str], tf1: bool = False) -> bool:
    """A call of ``fit``, ``apply_gradients``, ``tape.gradient``... or of one of the file's ``steps``;
    with ``tf1`` (the file makes a session), a session's or an op's ``run`` that does not only initialize."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if tf1 and isinstance(func, ast.Attribute) and func.attr == "run":
        return not (isinstance(func.value, ast.Name) and func.value.id in _NOT_SESSIONS) and not _initializes(node)
    return (isinstance(func, ast.Attribute) and func.attr in _TRAINING_CALLS) or (isinstance(func, ast.Name) and func.id in steps)


def _initializes(call: ast.Call) -> bool:
    """``sess.run(tf.global_variables_initializer())``, ``sess.run(init)``, ``init.run()``, ``iterator.initializer``."""
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    fetched = call.args[0] if call.args else receiver
    if isinstance(fetched, (ast.List, ast.Tuple)) and fetched.elts:
        return all(_initializer(e) for e in fetched.elts)
    return fetched is not None and _initializer(fetched)


def _initializer(node: ast.expr) -> bool:
    text = ast.unparse(node)
    return "initializer" in text or text.split(".")[-1] in _INIT_NAMES


def _run_now(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and what it holds, but not the bodies of the functions, lambdas and classes it defines."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            yield from _run_now(child)
