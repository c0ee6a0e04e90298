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

__all__ = ["reused_recorder", "reusing_trace"]

_REUSED: contextvars.ContextVar[Any] = contextvars.ContextVar("flowcheck_reused_trace", default=None)


@contextlib.contextmanager
def reusing_trace(recorder: Any) -> Iterator[None]:
    """Within the block, a ``tf.function`` is analyzed on its own cached trace, recorded by ``recorder``.

    Such a trace is judged at its gradient calls whatever it returns: under ``flowcheck run``, what a
    script's function returns is differentiated only by a tape of the script's, itself a gradient
    call that is judged (DeepDream's ascent returning its loss and image; a gradient penalty in a
    ``tf.function`` called inside an eager critic tape, whose outputs that tape answers for).
    """
    token = _REUSED.set(recorder)
    try:
        yield
    finally:
        _REUSED.reset(token)


def reused_recorder() -> Any:
    """The recorder of the trace to reuse (a ``flowcheck.trace.sites.SiteRecorder``), or None."""
    return _REUSED.get()
