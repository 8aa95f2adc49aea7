"""Exact sliding windows over timestamped events (no bucketing).

Window convention: at query time ``now`` a window of ``w`` seconds holds the events with
``now - w < ts <= now`` (half-open on the left: an event exactly ``w`` seconds old has left).
Timestamps must be non-decreasing, both for additions and for queries; equal timestamps are
allowed. Events are evicted as soon as the window passes them, so memory is bounded by the
events inside the window.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter, deque
from collections.abc import Hashable
from fractions import Fraction
from typing import NamedTuple


class WindowEvent(NamedTuple):
    """One entry of a sliding window."""

    ts: float
    value: int
    key: Hashable | None


class TimeWentBackwards(ValueError):
    """Raised when an event or a query is older than one already seen."""


Entry = tuple[float, int, Hashable | None]
"""How a window stores an event: a plain ``(ts, value, key)`` tuple. CPython's collector
stops tracking an exact tuple of atoms (floats, ints, strings, None) after it survives one
collection; a NamedTuple (a subclass) stays tracked. At thousands of events per second the
windows hold hundreds of thousands of them, and each tracked one lengthened every full
collection: 166k tracked objects made a full collection pause the event loop 115 ms (the
stalls `testbed calibrate` found; tests/reference_impl/test_windows_gc.py)."""


class SlidingWindow:
    """Exact count, sum, distinct-key count and median over the last ``window_s`` seconds.

    ``track_median`` keeps a sorted copy of the values (O(n) insert/evict, exact);
    ``track_distinct`` keeps a multiset of keys. Events are stored as :data:`Entry` tuples.
    """

    __slots__ = ("_clock", "_events", "_keys", "_sorted", "_sum", "window_s")

    def __init__(
        self, window_s: float, *, track_median: bool = False, track_distinct: bool = False
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._events: deque[Entry] = deque()
        self._sum = 0
        self._keys: Counter[Hashable] | None = Counter() if track_distinct else None
        self._sorted: list[int] | None = [] if track_median else None
        self._clock = float("-inf")

    def __len__(self) -> int:
        return len(self._events)

    @property
    def clock(self) -> float:
        """Latest timestamp seen (event or query)."""
        return self._clock

    def _advance(self, now: float) -> None:
        if now < self._clock:
            raise TimeWentBackwards(f"time {now} is before {self._clock}")
        self._clock = now
        horizon = now - self.window_s
        events = self._events
        while events and events[0][0] <= horizon:
            _, value, key = events.popleft()
            self._sum -= value
            if self._keys is not None and key is not None:
                left = self._keys[key] - 1
                if left:
                    self._keys[key] = left
                else:
                    del self._keys[key]
            if self._sorted is not None:
                del self._sorted[bisect_left(self._sorted, value)]

    def add(self, ts: float, value: int = 0, key: Hashable | None = None) -> None:
        """Record an event at ``ts`` (evicts what ``ts`` pushes out of the window)."""
        self._advance(ts)
        self._events.append((ts, value, key))
        self._sum += value
        if self._keys is not None and key is not None:
            self._keys[key] += 1
        if self._sorted is not None:
            insort(self._sorted, value)

    def count(self, now: float) -> int:
        """Number of events in ``(now - window_s, now]``."""
        self._advance(now)
        return len(self._events)

    def sum(self, now: float) -> int:
        """Sum of the values in the window."""
        self._advance(now)
        return self._sum

    def distinct(self, now: float) -> int:
        """Number of distinct non-None keys in the window."""
        if self._keys is None:
            raise RuntimeError("window built without track_distinct")
        self._advance(now)
        return len(self._keys)

    def keys(self, now: float) -> set[Hashable]:
        """The distinct non-None keys in the window."""
        if self._keys is None:
            raise RuntimeError("window built without track_distinct")
        self._advance(now)
        return set(self._keys)

    def median(self, now: float) -> Fraction | None:
        """Exact median of the values in the window (mean of the two middle ones if even);
        None when the window is empty."""
        if self._sorted is None:
            raise RuntimeError("window built without track_median")
        self._advance(now)
        values = self._sorted
        n = len(values)
        if n == 0:
            return None
        mid = n // 2
        if n % 2:
            return Fraction(values[mid])
        return Fraction(values[mid - 1] + values[mid], 2)

    def events(self, now: float) -> list[WindowEvent]:
        """The events in the window, oldest first."""
        self._advance(now)
        return [WindowEvent(*e) for e in self._events]
