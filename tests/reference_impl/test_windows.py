"""Exact sliding windows against a brute-force model recomputed from the full event list."""

from __future__ import annotations

from fractions import Fraction
from statistics import median

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impl.rules.windows import SlidingWindow, TimeWentBackwards


def brute(events: list[tuple[float, int, str | None]], now: float, w: float) -> dict:
    """The window (now - w, now] recomputed from scratch."""
    inside = [e for e in events if now - w < e[0] <= now]
    values = [v for _, v, _ in inside]
    return {
        "count": len(inside),
        "sum": sum(values),
        "distinct": len({k for _, _, k in inside if k is not None}),
        "median": Fraction(median(values)) if values else None,
    }


# Steps: ("add", dt, value, key) or ("query", dt). Small integer gaps make equal timestamps
# and events exactly on the window edge frequent.
step = st.one_of(
    st.tuples(
        st.just("add"), st.integers(0, 4), st.integers(0, 1000),
        st.sampled_from([None, "a", "b", "c", "d"]),
    ),
    st.tuples(st.just("query"), st.integers(0, 6)),
)


@settings(max_examples=300, deadline=None)
@given(window=st.integers(1, 8), steps=st.lists(step, max_size=60))
def test_window_matches_brute_force(window: int, steps: list[tuple]) -> None:
    win = SlidingWindow(window, track_median=True, track_distinct=True)
    events: list[tuple[float, int, str | None]] = []
    now = 0.0
    for s in steps:
        now += s[1]
        if s[0] == "add":
            win.add(now, s[2], s[3])
            events.append((now, s[2], s[3]))
        expected = brute(events, now, window)
        assert win.count(now) == expected["count"]
        assert win.sum(now) == expected["sum"]
        assert win.distinct(now) == expected["distinct"]
        assert win.median(now) == expected["median"]
        # memory bounded by the events inside the window
        assert len(win) == expected["count"]


@settings(max_examples=100, deadline=None)
@given(
    window=st.floats(0.5, 50, allow_nan=False),
    gaps=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=40),
    values=st.lists(st.integers(-500, 500), min_size=40, max_size=40),
)
def test_window_float_times(window: float, gaps: list[float], values: list[int]) -> None:
    win = SlidingWindow(window, track_median=True)
    events: list[tuple[float, int, str | None]] = []
    now = 1000.0
    for gap, value in zip(gaps, values, strict=False):
        now += gap
        win.add(now, value)
        events.append((now, value, None))
        expected = brute(events, now, window)
        assert (win.count(now), win.sum(now), win.median(now)) == (
            expected["count"], expected["sum"], expected["median"],
        )


def test_window_is_half_open_on_the_left() -> None:
    win = SlidingWindow(10)
    win.add(0.0, 5)
    win.add(0.0, 7)
    assert win.sum(9.999) == 12
    assert win.count(10.0) == 0  # exactly w seconds old: left the window
    assert win.sum(10.0) == 0


def test_equal_timestamps_enter_and_leave_together() -> None:
    win = SlidingWindow(3, track_distinct=True)
    for key in ("x", "y", "x"):
        win.add(5.0, 1, key)
    assert (win.count(5.0), win.distinct(5.0)) == (3, 2)
    win.add(7.0, 1, "z")
    assert win.distinct(7.9) == 3
    assert win.keys(8.0) == {"z"}


def test_median_even_count_is_mean_of_middle_values() -> None:
    win = SlidingWindow(100, track_median=True)
    for v in (1, 10, 4, 3):
        win.add(1.0, v)
    assert win.median(1.0) == Fraction(7, 2)


def test_time_going_backwards_is_refused() -> None:
    win = SlidingWindow(10)
    win.add(5.0, 1)
    with pytest.raises(TimeWentBackwards):
        win.add(4.0, 1)
    with pytest.raises(TimeWentBackwards):
        win.count(4.5)


def test_statistics_need_tracking_and_window_positive() -> None:
    win = SlidingWindow(10)
    with pytest.raises(RuntimeError):
        win.median(0.0)
    with pytest.raises(RuntimeError):
        win.distinct(0.0)
    with pytest.raises(ValueError):
        SlidingWindow(0)
