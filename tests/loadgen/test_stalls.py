"""Stalls found from outside in an open-loop request log (loadgen/stalls.py)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.stalls import STALL_MIN_MS, find_stalls, normal_mask, threshold_s


def _log(stalls: list[tuple[float, float]], rate: float = 1000.0, seconds: float = 10.0,
         seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals answered in ~1 ms, and a server that answered nobody during each
    (start, duration): a request sent then is answered when the stall ends."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, int(rate * seconds * 1.2)))
    t = t[t < seconds]
    lat = 0.001 + rng.gamma(4.0, 0.0001, t.size)  # 1.4 ms mean, p99.9 well under 5 ms
    for start, dur in stalls:
        held = (t >= start) & (t < start + dur)
        lat[held] += start + dur - t[held]
    return t, lat


def test_a_clean_run_has_no_stall() -> None:
    t, lat = _log([])
    assert find_stalls(t, lat) == []
    assert normal_mask(t, []).all()


def test_each_stall_is_found_with_its_start_and_length() -> None:
    t, lat = _log([(2.0, 0.020), (6.0, 0.050)])
    found = find_stalls(t, lat)
    assert len(found) == 2
    for st_, (start, dur) in zip(found, [(2.0, 0.020), (6.0, 0.050)], strict=True):
        assert st_.start_s == pytest.approx(start, abs=0.002)
        # the first request held waited the whole stall (less what a Poisson gap hid)
        assert st_.duration_s == pytest.approx(dur, abs=0.003)
        assert st_.requests > 5
    keep = normal_mask(t, found)
    assert not keep[(t >= 2.0) & (t < 2.015)].any() and not keep[(t >= 6.0) & (t < 6.045)].any()
    assert keep[(t > 3.0) & (t < 5.0)].all()


def test_the_order_of_the_log_does_not_matter() -> None:
    t, lat = _log([(3.0, 0.030)])
    perm = np.random.default_rng(2).permutation(t.size)
    assert find_stalls(t[perm], lat[perm]) == find_stalls(t, lat)


def test_a_short_spread_is_not_a_stall() -> None:
    # a 3 ms hiccup is within the ordinary spread (STALL_MIN_MS): the off-CPU wait's
    assert STALL_MIN_MS > 3
    t, lat = _log([(4.0, 0.003)])
    assert find_stalls(t, lat) == []


def test_the_threshold_grows_with_a_slow_median() -> None:
    assert threshold_s(0.001) == pytest.approx(0.006)
    assert threshold_s(0.010) == pytest.approx(0.040)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 9.0), st.floats(0.006, 0.2)), max_size=5),
       st.integers(0, 10_000))
def test_stalls_are_ordered_disjoint_and_cover_every_slow_request(
        stalls: list[tuple[float, float]], seed: int) -> None:
    t, lat = _log(stalls, rate=500.0, seed=seed)
    found = find_stalls(t, lat)
    for a, b in pairwise(found):
        assert a.end_s < b.start_s
    assert all(s.duration_s > 0 and s.end_s >= s.start_s for s in found)
    slow = lat > threshold_s(float(np.median(lat)))
    assert sum(s.requests for s in found) == int(slow.sum())
    assert not (normal_mask(t, found) & slow).any()
    assert len(found) <= len(stalls)  # never invents one (overlapping stalls merge)


def test_the_generator_never_folds_its_histograms_inside_a_usual_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a fold stalls the generator's loop ~1 us per value; 300,000 requests (a minute at
    # 5,000/s) must be recorded without one, and the figures must still come out whole
    from loadgen.record import Recorder

    folds = 0
    flush = Recorder.flush

    def counted(self: Recorder) -> None:
        nonlocal folds
        folds += 1
        flush(self)

    monkeypatch.setattr(Recorder, "flush", counted)
    rec = Recorder(0.0)
    for i in range(300_000):
        rec.record("bet", i / 5000, i / 5000 + 0.001, None)
    assert folds == 0
    rec.export()
    assert rec.total["bet"].get_total_count() == 300_000
