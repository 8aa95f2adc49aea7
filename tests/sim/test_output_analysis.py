"""Warm-up detection, confidence intervals and stopping rules of the output analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.analysis.output_analysis import (
    SequentialStopper,
    confidence_interval,
    mser5,
    mser5_time,
    percentile,
    relative_half_width,
    replications_needed,
)

N = 2000
TAU = 60.0


def _ar1(rng: np.random.Generator, n: int, phi: float = 0.7) -> np.ndarray:
    """Stationary AR(1) noise (started from its stationary distribution)."""
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1 - phi * phi)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def _mser5_brute(series: np.ndarray) -> int:
    """MSER-5 written out literally, for comparison with the vectorised version."""
    m = len(series) // 5
    z = series[: m * 5].reshape(m, 5).mean(axis=1)
    best, best_d = math.inf, 0
    for d in range(min(m // 2, m - 2) + 1):
        rest = z[d:]
        val = float(((rest - rest.mean()) ** 2).sum()) / (m - d) ** 2
        if d == 0 or val < best * (1 - 1e-12):
            best, best_d = val, d
    return best_d * 5


def test_mser5_cuts_a_planted_transient() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = _ar1(rng, N) + 10.0 * np.exp(-np.arange(N) / TAU)
        cut = mser5(x)
        assert cut >= TAU, f"seed {seed}: cut {cut} keeps most of the transient"
        assert cut <= N // 2
        assert cut % 5 == 0


def test_mser5_rarely_cuts_a_stationary_series() -> None:
    cuts = [mser5(_ar1(np.random.default_rng(1000 + s), N)) for s in range(40)]
    assert sum(c == 0 for c in cuts) >= 28  # 70%; measured 82% on these seeds
    assert max(cuts) < N // 4


def test_mser5_matches_the_literal_definition() -> None:
    rng = np.random.default_rng(3)
    for n in (10, 11, 57, 400, 1003):
        for _ in range(5):
            x = rng.normal(size=n) + rng.uniform(0, 5) * np.exp(-np.arange(n) / rng.uniform(1, n))
            assert mser5(x) == _mser5_brute(x)


def test_mser5_edge_cases() -> None:
    assert mser5([]) == 0
    assert mser5([1.0] * 9) == 0  # fewer than two batches
    assert mser5([5.0] * 100) == 0  # constant series: no reason to cut
    with pytest.raises(ValueError, match=r"^series"):
        mser5([1.0, math.nan] * 10)


def test_mser5_time_on_binned_observations() -> None:
    rng = np.random.default_rng(5)
    n = 60_000
    times = np.sort(rng.uniform(0, 600.0, n))  # 100 requests/s for 10 minutes
    # latency: exponential noise plus a transient decaying with a 40 s time constant
    lat = rng.exponential(0.01, n) + 0.05 * np.exp(-times / 40.0)
    cut = mser5_time(times, lat, 1.0)
    assert 40.0 <= cut <= 300.0
    assert cut == float(int(cut))  # a bin edge
    # same as MSER-5 on the bin means
    means = np.array([lat[(times >= k) & (times < k + 1)].mean() for k in range(600)])
    assert cut == mser5(means) * 1.0


def test_mser5_time_skips_empty_bins() -> None:
    # observations only in even seconds: empty bins must not become zeros or NaNs
    times = np.repeat(np.arange(0, 400, 2, dtype=float), 3) + 0.5
    vals = np.where(times < 60, 10.0, 1.0) + np.tile([0.0, 0.1, -0.1], 200)
    cut = mser5_time(times, vals, 1.0)
    assert cut == 60.0
    assert mser5_time([], [], 1.0) == 0.0
    with pytest.raises(ValueError, match=r"^bin_s"):
        mser5_time(times, vals, 0.0)
    with pytest.raises(ValueError, match=r"^values"):
        mser5_time(times, vals[:-1], 1.0)


def test_confidence_interval_known_values() -> None:
    mean, hw = confidence_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert hw == pytest.approx(4.302652729911275 / math.sqrt(3))  # t_{0.975, 2} * s / sqrt(n)
    mean1, hw1 = confidence_interval([4.2])
    assert mean1 == 4.2 and math.isnan(hw1)
    assert confidence_interval([1.0, 2.0, 3.0], level=0.99)[1] > hw
    with pytest.raises(ValueError, match=r"^values"):
        confidence_interval([])
    with pytest.raises(ValueError, match=r"^level"):
        confidence_interval([1.0, 2.0], level=1.5)


def test_confidence_interval_coverage() -> None:
    rng = np.random.default_rng(2024)
    true_mean = 3.0
    covered = 0
    trials = 400
    for _ in range(trials):
        m, h = confidence_interval(rng.normal(true_mean, 2.0, size=5))
        covered += abs(m - true_mean) <= h
    assert 0.92 <= covered / trials <= 0.98


def test_relative_half_width() -> None:
    vals = [10.0, 11.0, 12.0]
    assert relative_half_width(vals) == pytest.approx(confidence_interval(vals)[1] / 11.0)
    assert relative_half_width([-10.0, -11.0, -12.0]) == pytest.approx(relative_half_width(vals))
    assert math.isnan(relative_half_width([1.0]))
    assert relative_half_width([-1.0, 1.0]) == math.inf


def test_replications_needed_rule() -> None:
    vals = [100.0, 101.0, 99.0, 100.5, 99.5]
    h = relative_half_width(vals)
    assert replications_needed(vals, h * 1.01) == 5  # already met
    assert replications_needed(vals, h / 2) == math.ceil(5 * (h / (h / 2)) ** 2)  # about 4n
    assert 20 <= replications_needed(vals, h / 2) <= 21
    assert replications_needed(vals, h * 0.999) == 6  # barely missed: at least one more
    assert replications_needed([1.0], 0.05) == 2
    with pytest.raises(ValueError, match=r"^precision"):
        replications_needed(vals, 0.0)


@settings(max_examples=60, deadline=None)
@given(vals=st.lists(st.floats(1.0, 1000.0), min_size=2, max_size=20),
       p1=st.floats(0.001, 0.5), p2=st.floats(0.001, 0.5))
def test_replications_needed_monotone_in_precision(vals: list[float], p1: float,
                                                   p2: float) -> None:
    lo, hi = sorted((p1, p2))
    assert replications_needed(vals, lo) >= replications_needed(vals, hi) >= len(vals)


def test_percentile() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(np.arange(101.0), 99) == pytest.approx(99.0)
    both = percentile([1.0, 2.0, 3.0, 4.0], [0, 100])
    assert both.tolist() == [1.0, 4.0]
    assert math.isnan(percentile([], 99))
    assert np.isnan(percentile([], [50, 99])).all()
    with pytest.raises(ValueError, match=r"^q"):
        percentile([1.0], 101)


def test_sequential_stopper() -> None:
    stopper = SequentialStopper(precision=0.05, max_replications=30)
    tight = [100.0, 101.0, 99.0, 100.0]
    loose = [100.0, 140.0, 70.0, 110.0]
    done = stopper.decide({"bet.p99": tight, "win.p99": tight})
    assert done.done and not done.capped and done.additional == 0
    more = stopper.decide({"bet.p99": tight, "win.p99": loose})
    assert not more.done
    assert more.worst_metric == "win.p99"
    assert replications_needed(loose, 0.05) > 30
    assert more.additional == 30 - 4  # capped estimate
    medium = [100.0, 104.0, 97.0, 101.0, 99.0]
    need = replications_needed(medium, 0.02)
    assert 5 < need < 30
    assert stopper.decide({"x": medium}).done
    assert SequentialStopper(0.02, 30).decide({"x": medium}).additional == need - 5
    assert more.relative_half_widths["win.p99"] == pytest.approx(relative_half_width(loose))
    capped_at = SequentialStopper(precision=0.001, max_replications=4)
    capped = capped_at.decide({"bet.p99": loose})
    assert capped.done and capped.capped and capped.additional == 0
    limited = SequentialStopper(precision=0.001, max_replications=10).decide({"x": loose})
    assert not limited.done and limited.additional == 6
    # one replication: cannot judge precision yet
    first = stopper.decide({"bet.p99": [100.0]})
    assert not first.done and first.additional == 1
    # all-NaN metrics (an operation with no traffic) are ignored
    assert stopper.decide({"bet.p99": tight, "idle.p99": [math.nan] * 4}).done
    with pytest.raises(ValueError, match=r"^estimates"):
        stopper.decide({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match=r"^max_replications"):
        SequentialStopper(precision=0.05, max_replications=1)
