"""The gradient oracle's answers for TensorFlow's and Keras's own gradient functions, kept between runs.

A fresh ``flowcheck`` process would otherwise probe every op signature of the model again
(tens of milliseconds per model, most of a cold analysis' own work). Only answers that cannot
depend on the user's code are kept: those of gradient functions whose code lies in an installed
package (the registry's functions, TensorFlow's and Keras's own ``tf.custom_gradient``\\ s), keyed
by that code itself -- file, line, name and a digest of the bytecode and constants of every
function involved -- and by the op signature, in a file per TensorFlow, Keras and Python version.
Another version, or changed code, can never meet a kept answer.

The file is ``$FLOWCHECK_CACHE_DIR/oracle-<versions>.json`` (default ``~/.cache/flowcheck``, or
``$XDG_CACHE_HOME/flowcheck``); ``FLOWCHECK_CACHE_DIR=off`` keeps nothing. A file that cannot be
read or written is passed over: it is a cache, the answers are probed instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import tensorflow as tf

from flowcheck._model import BarrierKind

__all__ = ["code_key", "installed", "library_key", "load", "path", "save"]

_FORMAT: Final = 1


def path() -> Path | None:
    """Where the answers are kept for this TensorFlow, Keras and Python, or None when keeping is off."""
    folder = os.environ.get("FLOWCHECK_CACHE_DIR")
    if folder == "off":
        return None
    if not folder:
        folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flowcheck")
    import keras
    import tensorflow as tf

    versions = f"tf{tf.__version__}-keras{keras.__version__}-py{sys.version_info[0]}.{sys.version_info[1]}"
    return Path(folder) / f"oracle-{versions}.json"


def code_key(code: types.CodeType) -> str:
    """A function's code as a key: where it is and a digest of what it does (nested functions included)."""
    digest = hashlib.sha256()
    stack = [code]
    while stack:
        current = stack.pop()
        digest.update(current.co_code)
        for const in current.co_consts:
            if isinstance(const, types.CodeType):
                stack.append(const)
            else:
                digest.update(repr(const).encode())
    return f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}:{digest.hexdigest()[:24]}"


def load() -> dict[str, list[tuple[bool, str | None, str]]]:
    """The kept answers (``{key: [(carries, kind, detail), ...]}``), empty when there are none."""
    where = path()
    if where is None:
        return {}
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("answers"), dict):
        return {}
    answers: dict[str, list[tuple[bool, str | None, str]]] = {}
    for key, value in data["answers"].items():
        try:
            answers[key] = [(bool(c), None if k is None else BarrierKind(k).value, str(d)) for c, k, d in value]
        except (TypeError, ValueError):
            continue  # an entry of another flowcheck: probed again
    return answers


def save(answers: Mapping[str, list[tuple[bool, str | None, str]]]) -> None:
    """Keep ``answers`` beside those another process kept meanwhile (written whole, atomically)."""
    where = path()
    if where is None or not answers:
        return
    merged = {**load(), **answers}
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=where.parent, delete=False, suffix=".tmp") as f:
            json.dump({"format": _FORMAT, "answers": merged}, f, separators=(",", ":"), sort_keys=True)
            temporary = f.name
        os.replace(temporary, where)
    except OSError:
        return  # a read-only home, a full disk: nothing is kept, nothing else changes


def describe(value: Any) -> Any:
    """A part of an oracle key as JSON-able text: code by :func:`code_key`, dtypes by name, tuples as lists."""
    if isinstance(value, types.CodeType):
        return code_key(value)
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    name = getattr(value, "name", None)  # a tf.DType
    if isinstance(name, str):
        return f"dtype:{name}"
    raise TypeError(f"cannot keep {type(value).__name__}")


_PLAIN: Final = (type(None), bool, int, float, str, bytes)


def library_key(signature: tuple[Any, ...], grad_fn: Any) -> tuple[Any, ...] | None:
    """A key for a custom gradient written inside TensorFlow or Keras, else None (not shared).

    The key holds the code of every function in the gradient's closures and every plain value
    they capture; captured tensors count by dtype and shape. Anything else (a user's function, an object)
    makes the gradient unshareable, so a shared answer is always the answer of the same code.
    """
    parts: list[Any] = [signature[1:]]  # not the one-off gradient name
    stack, seen = [grad_fn], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > 64:
            return None
        if isinstance(value, _PLAIN):
            parts.append(value)
        elif isinstance(value, (list, tuple)):
            parts.append((type(value).__name__, len(value)))
            stack.extend(value)
        elif isinstance(value, tf.Tensor):
            parts.append(("tensor", value.dtype.name, str(value.shape)))
        elif callable(value) and hasattr(value, "__code__"):
            code = value.__code__
            if not installed(code.co_filename):
                return None
            parts.append(code)
            for cell in value.__closure__ or ():
                try:
                    stack.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    parts.append("<empty>")
        else:
            return None
    return ("library custom gradient", *parts)


def installed(filename: str) -> bool:
    # An installed package's own file (TensorFlow, Keras, ...), never the user's nor AutoGraph's copy.
    return ("/site-packages/" in filename or "/dist-packages/" in filename) and "__autograph_generated" not in filename
