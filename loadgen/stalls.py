"""Stalls of a back office seen from outside: the moments it answered nobody.

A process that stops for ``D`` seconds (a full garbage collection, a checkpoint's fsync on
the event loop, a descheduled process) leaves a mark in an open-loop run's request log: no
answer at all for ``D`` while requests are waiting for one. Every request sent during the
stall is answered after it, and the queue the stall built then drains. That is not ordinary
queueing, which the simulator already models from the CPU demands: it is a pause of the
whole machine as the simulator's host sees it (``host.pauses``).

:func:`find_stalls` finds them in one level's requests from their send and answer times: a
stall is a gap between two consecutive answers during which the back office owed one (a
request in flight at the last answer or sent since had been in it for longer than the
level's median latency) for at least :func:`min_pause_s`, that held at least
:data:`STALL_MIN_HELD` such requests (each owed an answer for at least half that before the
silence ended), and that ended by answering them at once (the first
:data:`STALL_MIN_HELD` of them within half that after it). Its duration is that silence only.
Slow requests while others were still answered are not a stall: a commit waiting for
PostgreSQL's WAL flush on an asyncpg connection holds its own request, not the event loop,
which goes on answering balance reads. An earlier version called any request slower than
several medians a stall (its duration the longest such latency less the median): the model
then paused the whole host for a wait that only writes had, and predicted every operation's
p99 two to four times the measured on PostgreSQL. Such waits stay in the operation's own
latency spread (the calibrated off-CPU wait), where they belong.
:func:`normal_mask` marks the requests outside every stall and its drain (the ones whose
latency the calibrated off-CPU wait describes).

Pure functions over arrays: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STALL_MIN_MS = 5.0
"""A silence shorter than this (ms) is not a stall: the ordinary spread (scheduler slices,
loopback wake-ups) that the off-CPU wait carries."""
STALL_FACTOR = 4.0
"""... nor one shorter than this multiple of the level's median latency, less the median."""
STALL_MIN_HELD = 2
"""Requests a silence must hold to be a stall (one alone is a slow request, not a pause)."""


@dataclass(frozen=True)
class Stall:
    start_s: float
    """When the back office began to owe an answer and gave none (the window's clock)."""
    duration_s: float
    """How long it answered nobody."""
    end_s: float
    """When the last request it held was answered (its drain included)."""
    requests: int
    """Requests it held: sent before its end and answered after it."""
    from_s: float
    """Send time of the earliest request it held: requests sent from here to ``end_s`` were
    held by it or by its drain."""


def min_pause_s(median_s: float) -> float:
    """Shortest silence that is a stall, given the level's median latency."""
    return max((STALL_FACTOR - 1.0) * median_s, STALL_MIN_MS / 1000.0)


def find_stalls(sent_s: Sequence[float], latency_s: Sequence[float]) -> list[Stall]:
    """The stalls of one run: ``sent_s`` send times, ``latency_s`` times from sending to the
    answer (same order, any order of time)."""
    sent = np.asarray(sent_s, dtype=float)
    lat = np.asarray(latency_s, dtype=float)
    assert sent.shape == lat.shape, "one latency per request"
    if sent.size < STALL_MIN_HELD + 1:
        return []
    median = float(np.median(lat))
    least = min_pause_s(median)
    by_send = np.argsort(sent, kind="stable")
    sends, answers = sent[by_send], (sent + lat)[by_send]
    by_answer = np.argsort(answers, kind="stable")
    answer, sent_of_answer = answers[by_answer], sends[by_answer]
    stalls: list[Stall] = []
    for k in np.flatnonzero(np.diff(answer) >= least).tolist():
        last, end = float(answer[k]), float(answer[k + 1])
        # the requests the silence could hold: in flight at the last answer (sent within a
        # median before it) or sent during it, and answered at its end or later; a request
        # sent long before is slow on its own, not held by the silence
        lo, hi = np.searchsorted(sends, [last - median, end], side="left")
        late = answers[lo:hi] >= end
        waiting = sends[lo:hi][late]
        if waiting.size < STALL_MIN_HELD:
            continue
        start = max(last, float(waiting[0]) + median)
        if end - start < least:
            continue
        held = waiting <= end - median - least / 2
        # the silence ends by answering a request it held (a pause releases its queue); one
        # that ends with a fresh request's answer while older ones still wait did not
        # hold them: they are slow on their own
        if int(held.sum()) < STALL_MIN_HELD or sent_of_answer[k + 1] > end - median - least / 2:
            continue
        released = np.sort(answers[lo:hi][late][held])
        # ... all at once: two slow requests that overlapped by chance end far apart
        if released[STALL_MIN_HELD - 1] > end + least / 2:
            continue
        stalls.append(Stall(start, end - start, float(released[-1]), int(held.sum()),
                            float(waiting[held][0])))
    assert all(st.duration_s > 0 and st.end_s >= st.start_s + st.duration_s for st in stalls)
    return stalls


def normal_mask(sent_s: Sequence[float], stalls: Sequence[Stall]) -> np.ndarray:
    """True for the requests sent outside every stall and its drain."""
    t = np.asarray(sent_s, dtype=float)
    keep = np.ones(t.shape, dtype=bool)
    for st in stalls:
        keep &= ~((t >= st.from_s) & (t <= st.end_s))
    return keep
