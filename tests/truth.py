"""The truth every test compares flowcheck with: TensorFlow's own tape, run in the test.

A variable receives a gradient exactly when ``tape.gradient(loss, v, unconnected_gradients=NONE)``
is not None with ``v`` watched (``watch_accessed_variables=False`` and ``tape.watch(v)`` for every
variable), whatever its trainable flag. Whether a *default* tape watches it is a separate fact.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf


def tf_variable(v: Any) -> tf.Variable:
    """The ``tf.Variable`` behind a tf or Keras 3 variable."""
    if isinstance(v, tf.Variable):
        return v
    backing = getattr(v, "_value", None)
    return backing if isinstance(backing, tf.Variable) else v.value


def is_float(v: Any) -> bool:
    dtype = tf.as_dtype(tf_variable(v).dtype)
    return bool(dtype.is_floating or dtype.is_complex)


def _targets(out: Any) -> list[Any]:
    return [t for t in tf.nest.flatten(out) if isinstance(t, tf.Tensor) and (t.dtype.is_floating or t.dtype.is_complex)]


def watched_gradients(fn: Callable[..., Any], variables: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
    """What a tape watching every variable gives each one (None for non-float variables)."""
    floats = [i for i, v in enumerate(variables) if is_float(v)]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for i in floats:
            tape.watch(tf_variable(variables[i]))
        out = fn(*args, **kwargs)
    grads = tape.gradient(
        _targets(out), [tf_variable(variables[i]) for i in floats], unconnected_gradients=tf.UnconnectedGradients.NONE
    )
    result: list[Any] = [None] * len(variables)
    for i, g in zip(floats, grads):
        result[i] = g
    return result


def watched_truth(fn: Callable[..., Any], variables: Sequence[Any], *args: Any, **kwargs: Any) -> list[bool]:
    """Per variable: does a watching tape give it a gradient (zeros included)?"""
    return [g is not None for g in watched_gradients(fn, variables, *args, **kwargs)]


def default_tape_watches(fn: Callable[..., Any], variables: Sequence[Any], *args: Any, **kwargs: Any) -> list[bool]:
    """Per variable: does a default ``tf.GradientTape`` watch it when ``fn`` runs?"""
    with tf.GradientTape() as tape:
        fn(*args, **kwargs)
    watched = {id(v) for v in tape.watched_variables()}
    return [id(tf_variable(v)) in watched or any(id(c) in watched for c in getattr(tf_variable(v), "_values", ()))
            for v in variables]


def line_of(where: str | os.PathLike[str] | Callable[..., Any], marker: str) -> int:
    """The 1-based line holding ``marker`` in a file (a path) or in a function's source (a function).

    The marker must be on exactly one line (a line calling ``line_of`` does not count): that is
    where the test expects a barrier, a site or a call to be reported.
    """
    if callable(where):
        fn = inspect.unwrap(getattr(where, "python_function", where))
        lines, start = inspect.getsourcelines(fn)
    else:
        lines, start = Path(where).read_text(encoding="utf-8").splitlines(), 1
    hits = [start + i for i, line in enumerate(lines) if marker in line and "line_of(" not in line]
    assert len(hits) == 1, f"{marker!r} is on lines {hits} of {where}"
    return hits[0]
