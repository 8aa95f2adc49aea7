"""Measurements into the results schema: HDR percentiles, merging, per-second series."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim
from loadgen.record import Recorder, RunInfo, merge, to_results
from sim.model.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = load_scenario(ROOT / "scenarios" / "baseline_day.yaml")


def _fill(rec: Recorder, lat_ms: np.ndarray, op: str = "bet", t: float = 0.5) -> None:
    for x in lat_ms.tolist():
        rec.record(op, rec.t0 + t, rec.t0 + t + x / 1000, None)


def test_percentiles_match_numpy_within_hdr_precision() -> None:
    lat = np.random.default_rng(1).lognormal(0.0, 1.0, 20_000) + 0.05
    rec = Recorder(t0=100.0)
    _fill(rec, lat)
    res = to_results(rec, RunInfo(SCENARIO, "m", 1.0))
    row = res.summary.set_index("operation").loc["bet"]
    for col, q in (("p50_ms", 50), ("p99_ms", 99), ("p999_ms", 99.9)):
        assert row[col] == pytest.approx(np.percentile(lat, q), rel=0.01), col
    assert row["requests"] == 20_000 and row["error_rate"] == 0


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0.01, 5_000.0), min_size=1, max_size=300), st.integers(1, 4))
def test_merging_parts_equals_recording_everything_in_one(lat: list[float], parts: int) -> None:
    whole = Recorder(t0=0.0)
    _fill(whole, np.array(lat))
    pieces = [Recorder(t0=0.0) for _ in range(parts)]
    for i, x in enumerate(lat):
        _fill(pieces[i % parts], np.array([x]))
    merged = merge([p.export() for p in pieces])
    whole.flush()
    for q in (50, 90, 99, 99.9, 100):
        assert merged.total["bet"].get_value_at_percentile(q) == \
            whole.total["bet"].get_value_at_percentile(q)


def test_errors_skips_and_series_reach_the_results(tmp_path: Path) -> None:
    rec = Recorder(t0=0.0)
    for s in range(3):
        for _ in range(10):
            rec.record("bet", s + 0.1, s + 0.2, None)
        rec.record("bet", s + 0.1, s + 0.3, "INSUFFICIENT_FUNDS")
    rec.skip("win")
    res = to_results(rec, RunInfo(SCENARIO, "monolith", 3.0, {"mode": "open"}))
    res.save(tmp_path)
    back = sim.load_results(str(tmp_path))
    assert back.meta["source"] == "measurement"
    # what notebooks/capacity_report.ipynb reads from any run
    assert back.meta["scenario"] == "baseline_day" and back.meta["replications"] == {
        "monolith": 1} and back.meta["reduce_factor"] == 1
    assert back.meta["errors_by_code"] == {"bet": {"INSUFFICIENT_FUNDS": 3}}
    assert back.meta["skipped_requests"] == {"win": 1}
    row = back.summary.set_index("operation").loc["bet"]
    assert row["requests"] == 33 and row["error_rate"] == pytest.approx(3 / 33)
    assert row["throughput_rps"] == pytest.approx(11.0)
    ts = back.timeseries
    assert list(ts["t_s"]) == [0.0, 1.0, 2.0] and list(ts["errors"]) == [1, 1, 1]
    assert list(ts["requests"]) == [11, 11, 11]
    assert row["slo_p99_ms"] == 50 and bool(row["slo_met"]) is False  # 200 ms p99 > 50


def test_latencies_beyond_the_range_are_clamped_not_dropped() -> None:
    rec = Recorder(t0=0.0)
    rec.record("bet", 0.0, 1e6, None)  # eleven days
    res = to_results(rec, RunInfo(SCENARIO, "m", 1.0))
    assert res.summary["requests"].iloc[0] == 1
    assert math.isfinite(res.summary["p99_ms"].iloc[0])
