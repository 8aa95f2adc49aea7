"""How far a measured level's percentiles would move in another window like it: a block
bootstrap over the level's seconds.

A validation judges one window per level (60-120 s), and its p99 is set by a few bursts:
a commit waiting on a slow flush holds the requests behind it for tens of ms, a stall holds
every request. How many bursts one window happens to hold moves its p99 far more than the
count of requests suggests: session 14's monolith + PostgreSQL read bet's p99 at 17.1 and
47.3 ms in its validation where its calibration, minutes earlier, had read 14.3 and 17.7 at
the same rates, while their p50 agreed within 10%. Requests are not independent draws, so
the interval resamples whole blocks of :data:`BLOCK_S` seconds (each burst and its drain
stay together) and reads the percentile of every resampled window: the percentile
interval of :data:`DRAWS` draws. A prediction inside it is as close as another window of
the same level would have been to this one.

Latencies are binned on a log grid (:data:`BINS_PER_DECADE`: a percentile read within
~1.2%) so that each draw is one weighted sum of the blocks' histograms, not a sort.

Pure functions over arrays: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BLOCK_S = 2.0
"""Seconds of a resampled block: longer than a stall and its drain (tens to hundreds of
ms), short enough for a 60 s level to hold :data:`MIN_BLOCKS` of them."""
MIN_BLOCKS = 10
"""Fewer blocks than this give no interval (NaN): too few to resample."""
DRAWS = 400
"""Bootstrap draws: the 2.5th and 97.5th percentiles of 400 draws move by ~1 draw."""
CONFIDENCE = 0.95
BINS_PER_DECADE = 200
LOWEST_S = 1e-5
HIGHEST_S = 1e3
"""The grid's range (s); latencies outside it are read at its ends."""


def _grid() -> np.ndarray:
    decades = math.log10(HIGHEST_S) - math.log10(LOWEST_S)
    return np.logspace(math.log10(LOWEST_S), math.log10(HIGHEST_S),
                       round(decades * BINS_PER_DECADE) + 1)


def percentile_intervals(t_s: Sequence[float], latency_s: Sequence[float],
                         percentiles: Sequence[float] = (50.0, 99.0),
                         block_s: float = BLOCK_S, draws: int = DRAWS,
                         confidence: float = CONFIDENCE,
                         seed: int = 0) -> dict[float, tuple[float, float]]:
    """For each of ``percentiles``, the ``confidence`` interval (s) of the latency
    percentile of windows like this one: ``t_s`` the requests' times in the window,
    ``latency_s`` their latencies (same order). (NaN, NaN) with fewer than
    :data:`MIN_BLOCKS` non-empty blocks."""
    t = np.asarray(t_s, dtype=float)
    lat = np.asarray(latency_s, dtype=float)
    assert t.shape == lat.shape, "one latency per request"
    assert block_s > 0 and draws > 0 and 0 < confidence < 1
    assert all(0 < p < 100 for p in percentiles)
    nan = {float(p): (math.nan, math.nan) for p in percentiles}
    if t.size == 0:
        return nan
    _, block = np.unique(np.floor((t - t.min()) / block_s).astype(np.int64),
                         return_inverse=True)  # empty blocks dropped
    n_blocks = int(block.max()) + 1
    if n_blocks < MIN_BLOCKS:
        return nan
    edges = _grid()
    bins = np.clip(np.searchsorted(edges, lat, side="right") - 1, 0, len(edges) - 2)
    counts = np.zeros((n_blocks, len(edges) - 1))
    np.add.at(counts, (block, bins), 1.0)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_blocks, size=(draws, n_blocks))
    weights = np.zeros((draws, n_blocks))
    np.add.at(weights, (np.repeat(np.arange(draws), n_blocks), picks.ravel()), 1.0)
    cum = np.cumsum(weights @ counts, axis=1)
    middles = np.sqrt(edges[:-1] * edges[1:])
    tail = (1.0 - confidence) / 2
    out: dict[float, tuple[float, float]] = {}
    for p in percentiles:
        first = np.minimum((cum < cum[:, -1:] * (p / 100.0)).sum(axis=1), len(middles) - 1)
        lo, hi = np.quantile(middles[first], [tail, 1.0 - tail])
        out[float(p)] = (float(lo), float(hi))
    return out
