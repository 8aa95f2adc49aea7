"""The fraud rules' windows must not lengthen the garbage collector's full passes.

At 4,000 requests/s the monolith's windows held ~100,000 events; stored as NamedTuples
(which CPython's collector keeps tracking) they made each full collection walk them all:
pauses of the event loop grew from 15 to 115 ms within a minute (found by `testbed
calibrate` as stalls). Plain tuples of atoms are untracked after their first collection.
"""

from __future__ import annotations

import gc

from reference_impl.rules.windows import SlidingWindow, WindowEvent
from reference_impl.runtime import freeze_startup_heap

EVENTS = 20_000


def _tracked() -> int:
    gc.collect()
    return len(gc.get_objects())


def test_events_held_by_windows_are_not_tracked_by_the_collector() -> None:
    windows = [SlidingWindow(3600.0, track_distinct=True) for _ in range(10)]
    before = _tracked()
    for i in range(EVENTS):
        windows[i % 10].add(i / 100, i % 500, f"player-{i % 97}")
    grown = _tracked() - before
    assert sum(w.count(EVENTS / 100) for w in windows) == EVENTS
    assert grown < EVENTS / 100, f"{grown} more objects tracked for {EVENTS} events"


def test_window_api_still_returns_named_events() -> None:
    w = SlidingWindow(10.0)
    w.add(1.0, 5, "k")
    w.add(2.0, 7, None)
    assert w.events(3.0) == [WindowEvent(1.0, 5, "k"), WindowEvent(2.0, 7, None)]
    assert w.sum(11.5) == 7 and w.count(11.5) == 1


def test_start_up_heap_is_frozen_out_of_full_collections() -> None:
    try:
        assert freeze_startup_heap() > 1_000  # modules, functions, classes of this process
        assert gc.get_freeze_count() > 1_000
    finally:
        gc.unfreeze()
