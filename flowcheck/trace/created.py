"""The variables a plain callable's trace creates, initialized when that trace fails."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import tensorflow as tf

__all__ = ["creating_remembered", "initialize_created"]


def creating_remembered(fn: Any) -> Any:
    """``fn``, remembering how to initialize each variable it creates (a layer built at its first call).

    A ``tf.function`` initializes the variables its trace creates only when the trace succeeds:
    one that fails (a ``.numpy()`` round trip) leaves them uninitialized, and the user's layer (or
    ``self.w`` made lazily) broken for every later call. :func:`initialize_created` gives them
    the values the user's own first call would (a Keras initializer, a constant).
    """
    if getattr(fn, "__name__", None) == "<lambda>":
        # AutoGraph parses a lambda from its line, and called from a wrapper fails where tf.function's
        # own conversion succeeds (lambdas inside it): a lambda is traced as it is.
        return fn
    created: list[tuple[Any, Any]] = []

    def creator(next_creator: Any, **kwargs: Any) -> Any:
        variable = next_creator(**kwargs)
        initial = kwargs.get("initial_value")
        if not tf.executing_eagerly():
            created.append((variable, initial if callable(initial) else tf.get_static_value(initial)))
        return variable

    def call(*args: Any, **kwargs: Any) -> Any:
        with tf.variable_creator_scope(creator):
            return fn(*args, **kwargs)

    # fn's name and signature (its defaults feed the trace), but no ``__wrapped__``: AutoGraph would
    # convert the source it leads to (fn's, or none for a functools.partial) in place of this one.
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        with contextlib.suppress(AttributeError, TypeError):
            setattr(call, attribute, getattr(fn, attribute))
    with contextlib.suppress(TypeError, ValueError):
        call.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    call.flowcheck_created = created  # type: ignore[attr-defined]
    call.flowcheck_target = fn  # type: ignore[attr-defined]  # what owners_of follows: the user's callable
    return call


def initialize_created(function: Any) -> None:
    """Initialize what a failed trace of ``function`` (:func:`creating_remembered`) left uninitialized."""
    for variable, initial in getattr(getattr(function, "python_function", None), "flowcheck_created", ()):
        if initial is None or bool(variable.is_initialized()):
            continue  # a value only the graph could compute: TensorFlow's own state stands
        with tf.init_scope():
            variable.assign(tf.cast(initial() if callable(initial) else initial, variable.dtype))
