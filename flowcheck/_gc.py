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
    the graph. Nothing it makes is cyclic garbage, and the collector runs again afterwards, with
    its thresholds and counts of older generations as they were.

    What was made meanwhile is handed to the collector's oldest generation (:func:`_promote_young`)
    rather than left in the youngest, whose next pass, the first allocation after the pause, would
    walk every one of these objects only to find each alive (a pass that grew faster than the
    graph: 0.09 s on the 70,000-op graph, 6 ms on 7,000 ops, 10 times fewer).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            _promote_young()
            gc.enable()


def _promote_young() -> None:
    """Move the collector's young generations into its oldest, without walking them.

    ``gc.freeze()`` moves every tracked object to the permanent generation and zeroes the youngest
    generation's count; ``gc.unfreeze()`` moves them all back into the oldest generation. Both
    splice lists, whatever their length. The objects stay tracked: the next full collection walks
    them, as it would have after two younger passes found them alive; a cycle made just before the
    pause becomes garbage for that full collection instead of a younger one. Skipped when the process
    has frozen objects of its own, which ``gc.unfreeze()`` would release.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()
