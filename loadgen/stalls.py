"""Stalls of a back office seen from outside: the moments it answered nobody.

A process that stops for ``D`` seconds (a full garbage collection, a checkpoint's fsync on
the event loop, a descheduled process) leaves a mark in an open-loop run's request log:
every request sent during the stall is answered after it, so the request sent at its start
waits about ``D`` more than usual and those sent later less (their latencies fall on a line
of slope -1 in intended send time); the queue the stall built then drains. That is not
ordinary queueing, which the simulator already models from the CPU demands: it is a pause
of the whole machine as the simulator's host sees it (``host.pauses``).

:func:`find_stalls` finds them in one level's requests: a request is *slow* when its latency
exceeds :func:`threshold_s` (several times the level's median, and at least
:data:`STALL_MIN_MS`); each slow request ``i`` says the back office was not answering from
its send time ``t_i`` until ``t_i + latency_i - median``; overlapping such intervals are one
stall. A stall's duration is its longest latency less the median (the request sent at its
start waited all of it; the drain afterwards is the model's to reproduce, not the pause's).
:func:`normal_mask` marks the requests outside every stall (the ones whose latency the
calibrated off-CPU wait describes).

Pure functions over arrays: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STALL_MIN_MS = 5.0
"""A latency must exceed the median by at least this (ms) to count as stalled: below it,
a latency is the ordinary spread (scheduler slices, loopback wake-ups) that the off-CPU wait
carries."""
STALL_FACTOR = 4.0
"""... and be above this multiple of the level's median latency."""


@dataclass(frozen=True)
class Stall:
    start_s: float
    """Intended send time of the first request it held (from the window's start)."""
    duration_s: float
    """Longest latency of a request it held, less the level's median."""
    end_s: float
    """When the last request it held was answered, less the median (the drain included)."""
    requests: int
    """Requests sent during it or its drain, slow ones."""


def threshold_s(median_s: float) -> float:
    """Latency above which a request was held by a stall."""
    return max(STALL_FACTOR * median_s, median_s + STALL_MIN_MS / 1000.0)


def find_stalls(t_s: Sequence[float], latency_s: Sequence[float]) -> list[Stall]:
    """The stalls of one run: ``t_s`` intended send times, ``latency_s`` latencies (same
    order, any order of time)."""
    t = np.asarray(t_s, dtype=float)
    lat = np.asarray(latency_s, dtype=float)
    assert t.shape == lat.shape, "one latency per request"
    if t.size == 0:
        return []
    median = float(np.median(lat))
    slow = lat > threshold_s(median)
    if not slow.any():
        return []
    order = np.argsort(t[slow], kind="stable")
    starts = t[slow][order]
    held = lat[slow][order]
    ends = starts + held - median
    stalls: list[Stall] = []
    s0, e0, worst, n = starts[0], ends[0], held[0], 1
    for s, e, h in zip(starts[1:].tolist(), ends[1:].tolist(), held[1:].tolist(), strict=True):
        if s <= e0:  # sent before the back office answered the earlier one: same stall
            e0, worst, n = max(e0, e), max(worst, h), n + 1
            continue
        stalls.append(Stall(float(s0), float(worst - median), float(e0), n))
        s0, e0, worst, n = s, e, h, 1
    stalls.append(Stall(float(s0), float(worst - median), float(e0), n))
    assert all(st.duration_s > 0 and st.end_s >= st.start_s for st in stalls)
    return stalls


def normal_mask(t_s: Sequence[float], stalls: Sequence[Stall]) -> np.ndarray:
    """True for the requests sent outside every stall (and its drain)."""
    t = np.asarray(t_s, dtype=float)
    keep = np.ones(t.shape, dtype=bool)
    for st in stalls:
        keep &= ~((t >= st.start_s) & (t <= st.end_s))
    return keep
