"""``flowcheck run``: analyze the trace a step's first call has just made instead of a fresh copy's.

While a script runs, a ``tf.function`` step is traced into its own cache (as its first call would
trace it) with the gradient calls recorded; :func:`flowcheck.trace.target.trace` then reads that trace
(a cache hit) within :func:`reusing_trace`, which saves tracing the whole step a second time.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

__all__ = ["applies_seen", "reused_as_step", "reused_recorder", "reusing_trace"]

_REUSED: contextvars.ContextVar[Any] = contextvars.ContextVar("flowcheck_reused_trace", default=None)


@contextlib.contextmanager
def reusing_trace(recorder: Any, applies: bool) -> Iterator[None]:
    """Within the block, a ``tf.function`` is analyzed on its own cached trace, recorded by ``recorder``.

    It is judged at its gradient calls whatever it returns when a Keras optimizer applied gradients
    in it (``applies``), or when the script calls it with no tape recording around the call: then
    nothing differentiates what it returns (DeepDream's ascent returning its loss and image).
    """
    from tensorflow.python.eager import record

    token = _REUSED.set((recorder, applies or not record.could_possibly_record()))
    try:
        yield
    finally:
        _REUSED.reset(token)


def reused_recorder() -> Any:
    """The recorder of the trace to reuse (a ``flowcheck.trace.sites.SiteRecorder``), or None."""
    reused = _REUSED.get()
    return None if reused is None else reused[0]


def reused_as_step() -> bool:
    """Whether the trace to reuse is judged at its gradient calls whatever it returns."""
    reused = _REUSED.get()
    return bool(reused and reused[1])


@contextlib.contextmanager
def applies_seen(seen: list[str]) -> Iterator[None]:
    """Within the block, each Keras optimizer ``apply`` call adds the optimizer's name to ``seen``."""
    from keras.src.optimizers import base_optimizer

    classes = [(cls, vars(cls)["apply"]) for cls in _defining_apply(base_optimizer.BaseOptimizer)]

    def wrap(original: Any) -> Any:
        def apply(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(self.name))
            return original(self, *args, **kwargs)

        return apply

    for cls, original in classes:
        setattr(cls, "apply", wrap(original))
    try:
        yield
    finally:
        for cls, original in classes:
            setattr(cls, "apply", original)


def _defining_apply(cls: Any) -> Iterator[Any]:
    """``cls`` and its subclasses, those that define ``apply`` themselves."""
    if "apply" in vars(cls):
        yield cls
    for sub in cls.__subclasses__():
        yield from _defining_apply(sub)
