"""The measured spread of a level's percentiles (loadgen/spread.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.spread import BINS_PER_DECADE, BLOCK_S, MIN_BLOCKS, percentile_intervals

GRID = 10 ** (1 / BINS_PER_DECADE)  # a percentile is read within one bin of the grid


def _window(rng: np.random.Generator, seconds: float, rate: float,
            bursts_per_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals with lognormal latencies around 3 ms; with ``bursts_per_s``, bursts
    of 60 ms that hold every request sent in the 60 ms before them (a stall and its queue)."""
    n = rng.poisson(rate * seconds)
    t = np.sort(rng.uniform(0.0, seconds, n))
    lat = rng.lognormal(math.log(0.003), 0.3, n)
    for start in rng.uniform(0.0, seconds, rng.poisson(bursts_per_s * seconds)):
        held = (t >= start) & (t < start + 0.06)
        lat[held] += start + 0.06 - t[held]
    return t, lat


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), seconds=st.floats(20.0, 120.0),
       rate=st.floats(50.0, 400.0))
def test_the_interval_holds_the_windows_own_percentiles(seed: int, seconds: float,
                                                        rate: float) -> None:
    """Whatever the window: each interval is ordered and holds (within the grid's
    resolution) the percentile of the window itself, which is one of the windows like it."""
    t, lat = _window(np.random.default_rng(seed), seconds, rate, bursts_per_s=0.2)
    got = percentile_intervals(t, lat, (50.0, 99.0), seed=seed)
    for p, (lo, hi) in got.items():
        own = float(np.percentile(lat, p))
        assert lo <= hi
        assert lo / GRID**2 <= own <= hi * GRID**2, (p, lo, own, hi)


def test_bursts_widen_the_p99s_interval_that_independent_requests_would_not() -> None:
    """The same latencies, once in bursts (the slow requests of a stall together) and once
    shuffled over the window's seconds: blocks keep the bursts whole, so the window's p99
    depends on how many it held and the interval is wider; the p50 hardly moves."""
    rng = np.random.default_rng(7)
    t, lat = _window(rng, 60.0, 300.0, bursts_per_s=0.15)
    bursty = percentile_intervals(t, lat)
    shuffled = percentile_intervals(t, rng.permutation(lat))
    width = {k: (v[1] - v[0]) for k, v in bursty.items()}
    width_iid = {k: (v[1] - v[0]) for k, v in shuffled.items()}
    assert width[99.0] > 2 * width_iid[99.0], (bursty, shuffled)
    assert width[50.0] < 0.1 * bursty[50.0][0]


def test_windows_of_a_bursty_level_mostly_fall_in_each_others_interval() -> None:
    """Coverage: of 40 windows of one bursty level, the level's long-run p99 lies in most
    of their intervals (a bootstrap of 30 blocks under-covers an extreme percentile
    somewhat: 95% nominal, at least 80% here); windows four times as long give intervals
    about half as wide (the spread falls as one over the root of the window's length)."""
    rng = np.random.default_rng(11)
    _, long_run = _window(rng, 2000.0, 300.0, bursts_per_s=0.15)
    truth = float(np.percentile(long_run, 99))
    widths: dict[float, float] = {}
    for seconds in (60.0, 240.0):
        hits, w = 0, []
        for i in range(40):
            t, lat = _window(rng, seconds, 300.0, bursts_per_s=0.15)
            lo, hi = percentile_intervals(t, lat, (99.0,), seed=i)[99.0]
            hits += lo / GRID <= truth <= hi * GRID
            w.append(hi - lo)
        assert hits >= 32, (seconds, hits)
        widths[seconds] = float(np.median(w))
    assert 0.3 < widths[240.0] / widths[60.0] < 0.75, widths


def test_too_few_blocks_give_no_interval_and_bad_input_is_refused() -> None:
    t = np.linspace(0.0, BLOCK_S * (MIN_BLOCKS - 1) - 1e-6, 500)
    got = percentile_intervals(t, np.full(t.shape, 0.002))
    assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in got.values())
    assert all(math.isnan(x) for x in percentile_intervals([], [])[50.0])
    t = np.linspace(0.0, BLOCK_S * MIN_BLOCKS * 2, 500)
    lo, hi = percentile_intervals(t, np.full(t.shape, 0.002))[99.0]
    assert lo == hi == pytest.approx(0.002, rel=GRID - 1)  # one latency: no spread
    with pytest.raises(AssertionError):
        percentile_intervals([0.0, 1.0], [0.001])
    with pytest.raises(AssertionError):
        percentile_intervals(t, t, (100.0,))
