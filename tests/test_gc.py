"""``flowcheck._gc``: the collector paused, then given back to the process as it was."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from flowcheck._gc import collector_paused


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector enabled, and enabled again after the test whatever it did."""
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was_enabled else gc.disable)()


def test_the_collector_comes_back_enabled_with_its_thresholds(collector: None) -> None:
    thresholds = gc.get_threshold()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_threshold() == thresholds


def test_a_collector_disabled_by_the_user_stays_disabled(collector: None) -> None:
    gc.disable()
    with collector_paused():
        kept = [[i] for i in range(1000)]
    assert not gc.isenabled()
    assert gc.get_count()[0] >= len(kept)  # nothing was moved: the user's young objects stay young


def test_objects_made_while_paused_leave_no_pass_of_the_youngest_generation_due(collector: None) -> None:
    with collector_paused():
        kept = [[i] for i in range(10_000)]  # more than the youngest generation's threshold
    assert gc.get_count()[0] < gc.get_threshold()[0]
    assert gc.is_tracked(kept[-1])
    assert any(obj is kept[-1] for obj in gc.get_objects(generation=2))


def test_the_users_frozen_objects_stay_frozen(collector: None) -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collector_paused():
            kept = [[i] for i in range(1000)]
        # Neither unfrozen (0) nor frozen with the young ones (1,000 more); a frozen object that
        # another thread lets go of meanwhile leaves the permanent generation, so not exactly equal.
        assert 0 < gc.get_freeze_count() <= frozen
        assert not any(obj is kept[-1] for obj in gc.get_objects(generation=2))  # left young, as before
    finally:
        gc.unfreeze()


def test_a_cycle_made_while_paused_is_still_collected(collector: None) -> None:
    with collector_paused():
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
    assert alive() is not None  # a cycle: only the collector frees it
    gc.collect()
    assert alive() is None
