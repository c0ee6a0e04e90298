"""The truth every test compares flowcheck with: TensorFlow's own tape, run in the test.

A variable receives a gradient exactly when ``tape.gradient(loss, v, unconnected_gradients=NONE)``
is not None with ``v`` watched (``watch_accessed_variables=False`` and ``tape.watch(v)`` for every
variable), whatever its trainable flag. Whether a *default* tape watches it is a separate fact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
