"""Recovery metrics (sim/analysis/recovery.py): definitions on hand-built runs, the rolling
p99 against a direct computation, aggregation, and the recovery table's save/load."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.analysis.recovery import (
    FaultWindow,
    aggregate_recovery,
    bins_from_requests,
    recovery_row,
    rolling_p99,
)
from sim.reports.results import BIN_COLUMNS, RECOVERY_COLUMNS, Results, load_results

SLO = 100.0


def _bins(n: int, ok: float = 100, failed: float = 0, p99: float = 20.0) -> pd.DataFrame:
    return pd.DataFrame({"t_s": np.arange(n, dtype=float), "ok": np.full(n, ok),
                         "failed": np.full(n, failed), "timed_out": np.zeros(n),
                         "shed": np.zeros(n), "window_p99_ms": np.full(n, p99)})


def test_crash_like_run() -> None:
    """Fault 10..20 s: every request fails 10..14, successes come back at 20 with high p99
    until 30, then fine."""
    b = _bins(60)
    b.loc[10:19, "ok"] = 0
    b.loc[10:19, "failed"] = 100
    b.loc[10:19, "window_p99_ms"] = np.nan
    b.loc[20:29, "window_p99_ms"] = 500.0
    f = FaultWindow("crash", "crash", "wallet", 10.0, 20.0)
    r = recovery_row(b, f, SLO, window_s=5.0)
    assert r["detect_s"] == 1.0              # the first bad bin, at its end
    assert r["resume_s"] == 11.0             # bins 10..19 fail; bin 20 succeeds (slowly)
    assert r["recovered"] is True
    # bins 20..29 are over the target; from bin 30 the trailing 5 s window is still failing
    # nothing (errors stopped at 19), so bin 30 holds: restored at its end, 21 s after 10
    assert r["slo_restored_s"] == 21.0
    assert r["failed"] == 1000.0
    assert r["availability_fault"] == 0.0
    assert r["availability_before"] == 1.0
    assert r["availability_recovery"] == 1.0
    assert r["availability_after"] == 1.0


def test_a_fault_starting_inside_a_bin_counts_that_bin() -> None:
    """A drill's kill lands at 3.001 s, not on a bin edge: the failures of bin 3 (3..4 s)
    belong to the fault (they were dropped, and the fault read as harmless)."""
    b = _bins(20, ok=40)
    b.loc[3, "ok"] = 10
    b.loc[3, "failed"] = 26
    f = FaultWindow("kill", "kill", "monolith", 3.001, 3.791)
    r = recovery_row(b, f, SLO, window_s=2.0)
    assert r["failed"] == 26.0
    assert r["detect_s"] == pytest.approx(4.0 - 3.001)  # bin 3 is bad, at its end
    assert r["resume_s"] == pytest.approx(5.0 - 3.001)  # bin 4 is the first good one
    assert r["availability_fault"] < 1.0


def test_error_window_delays_restoration() -> None:
    """With errors until 19 and p99 fine, the trailing error ratio keeps the SLO from holding
    until the window has passed the last error."""
    b = _bins(60)
    b.loc[10:19, "failed"] = 100
    f = FaultWindow("x", "crash", "wallet", 10.0, 20.0)
    r = recovery_row(b, f, SLO, window_s=5.0)
    assert r["slo_restored_s"] == 15.0       # bin 24 is the first whose window excludes 19


def test_producer_detection_time_wins() -> None:
    b = _bins(40)
    b.loc[10:19, "failed"] = 100
    r = recovery_row(b, FaultWindow("x", "crash", "s", 10.0, 20.0, detected_s=13.5), SLO, 5.0)
    assert r["detect_s"] == 3.5


def test_never_recovers_is_said() -> None:
    """A run that stays down after its trigger ended (metastable) is not recovered and its
    counts run to the end of the data."""
    b = _bins(50)
    b.loc[10:, "ok"] = 10
    b.loc[10:, "timed_out"] = 90
    b.loc[10:, "window_p99_ms"] = 900.0
    r = recovery_row(b, FaultWindow("x", "network", "a->b", 10.0, 15.0), SLO, 5.0)
    assert r["recovered"] is False
    assert math.isnan(r["slo_restored_s"])
    assert r["timed_out"] == 90.0 * 40
    assert r["availability_after"] != r["availability_after"]  # NaN: no "after"


def test_nothing_wrong_detects_nothing() -> None:
    b = _bins(30)
    r = recovery_row(b, FaultWindow("x", "slowdown", "s", 10.0, 20.0), SLO, 5.0)
    assert math.isnan(r["detect_s"])
    assert r["slo_restored_s"] == 1.0 and r["recovered"] is True
    assert r["resume_s"] == 0.0


def test_hold_period() -> None:
    """A brief good stretch that breaks again does not count with a hold period."""
    b = _bins(80)
    b.loc[10:19, "window_p99_ms"] = 500.0
    b.loc[30:34, "window_p99_ms"] = 500.0
    f = FaultWindow("x", "hang", "s", 10.0, 20.0)
    assert recovery_row(b, f, SLO, 5.0, hold_s=5.0)["slo_restored_s"] == 11.0
    assert recovery_row(b, f, SLO, 5.0, hold_s=20.0)["slo_restored_s"] == 26.0
    assert recovery_row(b, f, SLO, 5.0, hold_s=None)["slo_restored_s"] == 26.0
    short = recovery_row(b.iloc[:45], f, SLO, 5.0, hold_s=30.0)
    assert short["recovered"] is False


def test_queues_give_peak_and_drain() -> None:
    b = _bins(60)
    q = []
    for t in range(60):
        backlog = 0.5 if t < 10 else (5.0 * (t - 10) if t < 20 else max(0.5, 50 - 5.0 * (t - 20)))
        q.append({"t_s": float(t), "station": "w", "queue": backlog})
        q.append({"t_s": float(t), "station": "db", "queue": 0.0})
    r = recovery_row(b, FaultWindow("x", "hang", "w", 10.0, 20.0), SLO, 5.0,
                     queues=pd.DataFrame(q))
    assert r["peak_queue_station"] == "w" and r["peak_queue"] == 50.0
    # total queue back to max(2 x 0.5, 1) at t = 29.8 -> bin 30 (ends at 31)
    assert r["drained_s"] == 11.0


def test_retry_amplification() -> None:
    b = _bins(30)
    b["attempts"] = 100.0
    b.loc[10:14, "attempts"] = 300.0
    r = recovery_row(b, FaultWindow("x", "crash", "s", 10.0, 15.0), SLO, 5.0)
    assert r["retry_amplification"] == pytest.approx((5 * 300 + 100) / 600)


def test_bad_input_is_refused() -> None:
    b = _bins(10)
    with pytest.raises(ValueError, match="missing column"):
        recovery_row(b.drop(columns="shed"), FaultWindow("x", "c", "s", 1, 2), SLO, 5.0)
    with pytest.raises(ValueError, match="slo_p99_ms"):
        recovery_row(b, FaultWindow("x", "c", "s", 1, 2), math.inf, 5.0)
    with pytest.raises(ValueError, match="before start_s"):
        FaultWindow("x", "c", "s", 5, 2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 29.999), st.floats(0.1, 1e4), st.integers(0, 3)),
                min_size=0, max_size=200),
       st.sampled_from([1.0, 3.0, 10.0]))
def test_bins_match_a_direct_count(reqs, window_s) -> None:
    t = np.array([r[0] for r in reqs])
    lat = np.array([r[1] for r in reqs])
    code = np.array([r[2] for r in reqs], dtype=np.int8)
    b = bins_from_requests(t, lat, code, 30.0, window_s)
    assert list(b.columns[:len(BIN_COLUMNS)]) == list(BIN_COLUMNS)
    assert int(b[["ok", "failed", "timed_out", "shed"]].to_numpy().sum()) == len(reqs)
    for i in (0, 7, 29):
        sel = (t >= i + 1 - window_s) & (t < i + 1) & (code == 0)
        want = np.percentile(lat[sel], 99) if sel.any() else np.nan
        got = b["window_p99_ms"].iloc[i]
        assert (np.isnan(want) and np.isnan(got)) or got == pytest.approx(want)
        n_ok = int(((t >= i) & (t < i + 1) & (code == 0)).sum())
        assert b["ok"].iloc[i] == n_ok


def test_rolling_p99_empty() -> None:
    assert np.isnan(rolling_p99(np.array([]), np.array([]), np.array([], bool), 3, 5.0)).all()


def test_aggregate_and_round_trip(tmp_path) -> None:
    rows = []
    for arch, shift in (("monolith", 0), ("microservices", 3)):
        for rep in range(3):
            b = _bins(60)
            b.loc[10:19 + shift + rep, "window_p99_ms"] = 500.0
            r = recovery_row(b, FaultWindow("crash wallet", "crash", "wallet", 10.0, 20.0),
                             SLO, 5.0)
            rows.append({"architecture": arch, "replication": rep, **r})
    table = aggregate_recovery(rows)
    assert list(table.columns) == list(RECOVERY_COLUMNS)
    mono = table[table["architecture"] == "monolith"].iloc[0]
    assert mono["replications"] == 3 and mono["recovered_share"] == 1.0
    assert mono["slo_restored_s"] == pytest.approx(12.0)   # 11, 12, 13 s after the start
    assert mono["slo_restored_s_ci"] > 0
    res = Results(meta={}, summary=pd.DataFrame(), stations=pd.DataFrame(), recovery=table)
    res.save(tmp_path)
    back = load_results(tmp_path).recovery
    pd.testing.assert_frame_equal(back, res.recovery)
    empty = Results(meta={}, summary=pd.DataFrame(), stations=pd.DataFrame())
    empty.save(tmp_path / "e")
    assert load_results(tmp_path / "e").recovery.empty
    assert aggregate_recovery([]).empty
