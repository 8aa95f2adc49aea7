"""Did a station's queue grow through the run? A trend test robust to queueing noise.

Per replication, the post-warm-up queue-length series of a station (time-average per bin)
is cut into at most :data:`TREND_BATCHES` batches; the Theil-Sen slope of the batch means
(the median of all pairwise slopes, insensitive to a few bursts) times the span is the
queue's *growth* over the run, in requests. Across replications the growth is averaged with
a Student-t interval. A station is flagged as **growing** when

* the whole 95% interval of the growth is above zero (every replication rose, beyond chance),
* and the growth exceeds :data:`MIN_GROWTH` requests and :data:`GROWTH_SHARE` of the mean
  queue (an unstable queue starting near empty rises by about twice its mean; a stable one
  wanders around its mean, with no lasting rise).

Only numpy and scipy: the runner feeds it arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from sim.analysis.output_analysis import confidence_interval

TREND_BATCHES = 30
"""Batches of the queue series for the slope (batch means damp the bin-to-bin noise)."""
MIN_TREND_POINTS = 6
"""Fewer post-warm-up bins than this: no trend is estimated (NaN)."""
MIN_GROWTH = 1.0
"""A rise of less than one request over the run is never called growth."""
GROWTH_SHARE = 0.5
"""The rise must also exceed half of the station's mean queue length."""


def queue_growth(queue: np.ndarray, span_s: float) -> float:
    """Rise of a queue-length series (one value per equal bin) over ``span_s`` seconds.

    Theil-Sen slope of up to :data:`TREND_BATCHES` batch means, times the span; NaN when the
    series is too short.
    """
    q = np.asarray(queue, dtype=np.float64)
    q = q[np.isfinite(q)]
    if len(q) < MIN_TREND_POINTS or span_s <= 0:
        return math.nan
    n_b = min(TREND_BATCHES, len(q))
    size = len(q) // n_b
    means = q[: n_b * size].reshape(n_b, size).mean(axis=1)
    x = (np.arange(n_b) + 0.5) * (span_s / n_b)
    if np.ptp(means) == 0.0:
        return 0.0
    slope = stats.theilslopes(means, x).slope
    return float(slope * span_s)


def is_growing(growth: Sequence[float], mean_queue: Sequence[float]) -> bool:
    """The flag of the module docstring, from per-replication growths and mean queues."""
    g = np.asarray(growth, dtype=np.float64)
    g = g[np.isfinite(g)]
    if len(g) == 0:
        return False
    level = float(np.nanmean(np.asarray(mean_queue, dtype=np.float64)))
    mean = float(g.mean())
    low = mean
    if len(g) >= 2:
        m, hw = confidence_interval(g)
        low = float(m - hw) if math.isfinite(hw) else float(g.min())
    return low > 0.0 and mean > max(MIN_GROWTH, GROWTH_SHARE * (level if level > 0 else 0.0))
