"""Python's cyclic garbage collector paused while flowcheck makes many small objects that are never cyclic garbage."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collector_paused"]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the graph is built and analyzed.

    The analysis makes a few small objects per op and frees none; each full pass of the collector
    walks every live object, so on a 70,000-op graph its passes made the analysis grow faster than
    the graph. Nothing it makes is cyclic garbage, and the collector runs again afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
