"""Waiting times of a station as bounded log-bucket histograms, one per segment of the run.

Every wait (a pool's queueing time from request to grant; a processor-sharing job's response
minus its work) is counted in a bucket of relative width :data:`WAIT_RESOLUTION`, from
:data:`MIN_WAIT_S` to :data:`MAX_WAIT_S` (shorter waits count as zero, longer ones in the
last bucket). The run is cut into :data:`WAIT_SEGMENTS` equal segments with a histogram each,
so the runner can drop the warm-up (the segments before the cut) once MSER-5 has found it.
Memory is bounded: at most ``WAIT_SEGMENTS x WAIT_BUCKETS`` counts per station.
"""

from __future__ import annotations

import math

import numpy as np

MIN_WAIT_S = 1e-6
"""Waits below a microsecond count as zero."""
MAX_WAIT_S = 1e5
"""Waits above ~28 hours land in the last bucket."""
WAIT_RESOLUTION = 0.02
"""Relative width of a bucket: a percentile read from its midpoint is within 1%."""
WAIT_SEGMENTS = 20
"""Histograms per run (the warm-up cut is rounded up to a segment boundary)."""
_LOG_STEP = math.log1p(WAIT_RESOLUTION)
WAIT_BUCKETS = math.ceil(math.log(MAX_WAIT_S / MIN_WAIT_S) / _LOG_STEP) + 1
"""Bucket 0 holds zero waits; bucket i >= 1 holds [MIN * (1+r)^(i-1), MIN * (1+r)^i)."""


class WaitHistogram:
    """Counts of waits per segment of a run of ``duration`` seconds."""

    __slots__ = ("_counts", "_log_min", "_seg_s", "duration")

    def __init__(self, duration: float):
        self.duration = duration
        self._seg_s = duration / WAIT_SEGMENTS
        self._counts: list[list[int] | None] = [None] * WAIT_SEGMENTS
        self._log_min = math.log(MIN_WAIT_S)

    def record(self, now: float, wait: float) -> None:
        """Count a wait that ended at simulated time ``now``."""
        seg = min(int(now / self._seg_s), WAIT_SEGMENTS - 1) if self._seg_s > 0 else 0  # inline
        counts = self._counts[seg]
        if counts is None:
            counts = self._counts[seg] = [0] * WAIT_BUCKETS
        if wait < MIN_WAIT_S:
            counts[0] += 1
        else:
            i = int((math.log(wait) - self._log_min) / _LOG_STEP) + 1
            counts[i if i < WAIT_BUCKETS else WAIT_BUCKETS - 1] += 1

    def counts(self) -> np.ndarray:
        """Counts as an array of shape ``(WAIT_SEGMENTS, WAIT_BUCKETS)``."""
        out = np.zeros((WAIT_SEGMENTS, WAIT_BUCKETS), dtype=np.int64)
        for s, c in enumerate(self._counts):
            if c is not None:
                out[s] = c
        return out


def segment_index(now: float, seg_s: float) -> int:
    """The segment (of ``seg_s`` seconds each) simulated time ``now`` falls in (the same
    rule as :meth:`WaitHistogram.record`, which inlines it: it runs for every wait)."""
    return min(int(now / seg_s), WAIT_SEGMENTS - 1) if seg_s > 0 else 0


def bucket_values_s() -> np.ndarray:
    """A representative wait (s) of each bucket: 0, then each bucket's geometric midpoint."""
    i = np.arange(1, WAIT_BUCKETS)
    lo = MIN_WAIT_S * np.exp((i - 1) * _LOG_STEP)
    return np.concatenate([[0.0], lo * math.sqrt(1.0 + WAIT_RESOLUTION)])


def wait_percentiles_ms(counts: np.ndarray, first_segment: int,
                        pcts: tuple[float, ...] = (50.0, 99.0)) -> list[float]:
    """Percentiles (ms) of the waits in segments ``first_segment`` onwards (NaN if none)."""
    total = counts[first_segment:].sum(axis=0)
    n = int(total.sum())
    if n == 0:
        return [math.nan] * len(pcts)
    cum = np.cumsum(total)
    values = bucket_values_s()
    out = []
    for p in pcts:
        rank = max(1, math.ceil(p / 100.0 * n))
        out.append(float(values[int(np.searchsorted(cum, rank))]) * 1000.0)
    return out


def segment_of(t: float, duration: float) -> int:
    """The first whole segment at or after time ``t`` (where post-warm-up counting starts)."""
    if t <= 0 or duration <= 0:
        return 0
    return min(WAIT_SEGMENTS, math.ceil(t / (duration / WAIT_SEGMENTS) - 1e-9))
