"""The results schema: construction checks, save/load round trip, SLO verdicts, comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from sim.reports.results import (
    STATION_COLUMNS,
    STATION_TIMESERIES_COLUMNS,
    SUMMARY_COLUMNS,
    TIMESERIES_COLUMNS,
    Results,
    load_results,
    slo_met_flag,
    verdict,
)

ARCHS = ("monolith", "microservices")
OPS = ("login", "bet", "balance")
STATIONS = (("app.workers", "workers", 64), ("app.cpu", "cpu", 4),
            ("db.pool", "db_pool", 20), ("broker", "broker", 0))


def make_results(seed: int = 1, duration_s: int = 30) -> Results:
    """Synthetic results: 2 architectures, 3 operations, 4 stations, 2 replications."""
    rng = np.random.default_rng(seed)
    rows, st_rows, ts, sts = [], [], [], []
    for ai, arch in enumerate(ARCHS):
        for oi, op in enumerate(OPS):
            base = 5.0 * (oi + 1) * (1 + ai)
            row = {"architecture": arch, "operation": op, "requests": 3000.0 + oi,
                   "throughput_rps": 100.0 + oi, "throughput_rps_ci": 1.5,
                   "error_rate": 0.001 * oi, "error_rate_ci": 0.0005 if oi else math.nan}
            for j, col in enumerate(("mean_ms", "p50_ms", "p95_ms", "p99_ms", "p999_ms")):
                row[col] = base * (1 + j)
                row[f"{col}_ci"] = 0.05 * base * (1 + j)
            row["slo_p99_ms"] = 60.0 if op != "balance" else math.nan
            row["slo_met"] = (None if op == "balance"
                              else slo_met_flag(row["p99_ms"], row["p99_ms_ci"], 60.0))
            row["replications"] = 2
            rows.append(row)
        for si, (name, kind, servers) in enumerate(STATIONS):
            util = math.nan if kind == "broker" else 0.2 * (si + 1) + 0.1 * ai
            st_rows.append({"architecture": arch, "station": name, "kind": kind,
                            "servers": servers, "utilisation": util,
                            "utilisation_ci": 0.01, "mean_queue": 0.5 * si,
                            "mean_queue_ci": 0.1, "mean_wait_ms": 2.0 * si,
                            "mean_wait_ms_ci": math.nan})
        for rep in range(2):
            for t in range(duration_s):
                for op in OPS:
                    ts.append({"architecture": arch, "replication": rep, "t_s": float(t),
                               "operation": op, "requests": int(rng.poisson(100)),
                               "errors": int(rng.poisson(0.2)),
                               "mean_ms": float(rng.gamma(4.0, 3.0)),
                               "p50_ms": float(rng.gamma(4.0, 2.5)),
                               "p99_ms": float(rng.gamma(4.0, 10.0))})
                for name, _, _ in STATIONS:
                    sts.append({"architecture": arch, "replication": rep, "t_s": float(t),
                                "station": name, "utilisation": float(rng.uniform(0, 1)),
                                "queue": float(rng.exponential(2.0))})
    meta = {
        "scenario": "synthetic", "description": "made up for tests", "source": "simulation",
        "seed": seed, "replications": dict.fromkeys(ARCHS, 2),
        "warmup_s": {"monolith": 3.0, "microservices": 4.5}, "reduce_factor": 1,
        "duration_s": duration_s, "start_hour": 20.0, "created_at": "2024-05-01T20:00:00+00:00",
        "engine": "simpy", "notes": ["synthetic"],
        "slos": {"login": {"p99": 60.0}, "bet": {"p95": 40.0, "p99": 60.0, "p99.9": 500.0},
                 "error_budget": 0.001},
        "windows": [{"name": "spike", "start_s": 10.0, "end_s": 20.0}],
    }
    return Results(meta=meta, summary=pd.DataFrame(rows), stations=pd.DataFrame(st_rows),
                   timeseries=pd.DataFrame(ts), station_timeseries=pd.DataFrame(sts))


def assert_same(a: Results, b: Results) -> None:
    assert a.meta == b.meta
    for name in ("summary", "stations", "timeseries", "station_timeseries"):
        pdt.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)


# ---------------------------------------------------------------------- schema


def test_canonical_columns_and_dtypes() -> None:
    res = make_results()
    assert tuple(res.summary.columns) == SUMMARY_COLUMNS
    assert tuple(res.stations.columns) == STATION_COLUMNS
    assert tuple(res.timeseries.columns) == TIMESERIES_COLUMNS
    assert tuple(res.station_timeseries.columns) == STATION_TIMESERIES_COLUMNS
    assert str(res.summary["slo_met"].dtype) == "boolean"
    assert res.summary["replications"].dtype == np.int64
    assert res.timeseries["requests"].dtype == np.int64
    assert res.summary["p99_ms"].dtype == np.float64
    assert res.architectures == list(ARCHS)
    assert res.operations == list(OPS)
    assert len(res.timeseries) == 2 * 2 * 30 * 3
    assert len(res.station_timeseries) == 2 * 2 * 30 * 4


@pytest.mark.parametrize(("table", "column"), [
    ("summary", "p99_ms_ci"), ("summary", "architecture"), ("stations", "kind"),
    ("timeseries", "t_s"), ("station_timeseries", "queue"),
])
def test_missing_column_is_named(table: str, column: str) -> None:
    res = make_results()
    frames = {n: getattr(res, n) for n in
              ("summary", "stations", "timeseries", "station_timeseries")}
    frames[table] = frames[table].drop(columns=[column])
    with pytest.raises(ValueError, match=rf"{table}: missing column\(s\) {column}"):
        Results(meta=res.meta, **frames)


def test_bad_values_are_refused() -> None:
    res = make_results()
    stations = res.stations.copy()
    stations.loc[0, "kind"] = "gpu"
    with pytest.raises(ValueError, match=r"unknown kind.*gpu"):
        Results(meta=res.meta, summary=res.summary, stations=stations)
    ts = res.timeseries.copy()
    ts["requests"] = ts["requests"].astype(float) + 0.5
    with pytest.raises(ValueError, match=r"timeseries\.requests: values must be whole"):
        Results(meta=res.meta, summary=res.summary, stations=res.stations, timeseries=ts)
    summary = res.summary.copy()
    summary["p99_ms"] = summary["p99_ms"].astype(object)
    summary.loc[1, "p99_ms"] = "fast"
    with pytest.raises(ValueError, match=r"summary\.p99_ms"):
        Results(meta=res.meta, summary=summary, stations=res.stations)


def test_extra_columns_kept_after_schema() -> None:
    res = make_results()
    summary = res.summary.assign(cpu_ms_per_request=1.25)
    out = Results(meta=res.meta, summary=summary, stations=res.stations)
    assert list(out.summary.columns) == [*SUMMARY_COLUMNS, "cpu_ms_per_request"]
    assert out.timeseries.empty and tuple(out.timeseries.columns) == TIMESERIES_COLUMNS


# ---------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path: Path) -> None:
    res = make_results()
    out = res.save(tmp_path / "run")
    for name in ("summary.json", "summary.csv", "stations.csv", "timeseries.parquet",
                 "station_timeseries.parquet"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "summary.json").read_text())
    assert doc["meta"]["scenario"] == "synthetic"
    balance = next(r for r in doc["summary"] if r["operation"] == "balance")
    assert balance["slo_p99_ms"] is None and balance["slo_met"] is None
    assert "NaN" not in (out / "summary.json").read_text()
    back = load_results(out)
    assert_same(res, back)
    assert_same(res, Results.load(out / "summary.json"))


def test_round_trip_keeps_extras_empty_series_and_odd_floats(tmp_path: Path) -> None:
    res = make_results()
    summary = res.summary.copy()
    summary.loc[0, "p99_ms"] = 0.1 + 0.2  # not representable in short decimal
    summary.loc[1, "mean_ms"] = 1e-300
    meta = {**res.meta, "seed": np.int64(7), "notes": ["a", "b"]}
    res2 = Results(meta=meta, summary=summary, stations=res.stations)
    back = load_results(res2.save(tmp_path))
    assert back.summary.loc[0, "p99_ms"] == 0.1 + 0.2
    assert back.meta["seed"] == 7
    pdt.assert_frame_equal(back.summary, res2.summary, check_exact=True)
    assert back.timeseries.empty and tuple(back.timeseries.columns) == TIMESERIES_COLUMNS
    pdt.assert_frame_equal(back.timeseries, res2.timeseries)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no summary\.json"):
        load_results(tmp_path)
    out = make_results().save(tmp_path / "x")
    doc = json.loads((out / "summary.json").read_text())
    doc["summary_columns"].remove("p50_ms")
    for r in doc["summary"]:
        del r["p50_ms"]
    (out / "summary.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"summary.json: summary: missing column\(s\) p50_ms"):
        load_results(out)


# ---------------------------------------------------------------------- SLOs


@pytest.mark.parametrize(("value", "ci", "target", "expected"), [
    (50.0, 5.0, 60.0, "met"),
    (55.0, 5.0, 60.0, "met"),       # upper bound exactly on the target
    (58.0, 5.0, 60.0, "uncertain"),
    (62.0, 5.0, 60.0, "uncertain"),
    (66.0, 5.0, 60.0, "missed"),
    (59.0, math.nan, 60.0, "met"),  # unknown CI: point estimate decides
    (61.0, math.nan, 60.0, "missed"),
    (math.nan, 1.0, 60.0, "no data"),
])
def test_verdict(value: float, ci: float, target: float, expected: str) -> None:
    assert verdict(value, ci, target) == expected
    flag = slo_met_flag(value, ci, target)
    assert flag is (None if expected == "no data" else expected == "met")


def test_slo_table() -> None:
    res = make_results()
    table = res.slo_table().set_index(["architecture", "operation", "metric"])
    # p99 of login: 20 (monolith, ci 1), 40 (microservices, ci 2) against 60
    assert table.loc[("monolith", "login", "p99"), "verdict"] == "met"
    # bet p95: monolith 30 ± 1.5 vs 40 met; microservices 60 ± 3 vs 40 missed
    assert table.loc[("monolith", "bet", "p95"), "verdict"] == "met"
    assert table.loc[("microservices", "bet", "p95"), "verdict"] == "missed"
    # bet p99: microservices 80 ± 4 vs 60 missed
    assert table.loc[("microservices", "bet", "p99"), "verdict"] == "missed"
    assert table.loc[("monolith", "bet", "p99.9"), "target"] == 500.0
    # balance has no latency target, only the error budget (0.002 ± 0.0005 vs 0.001)
    assert ("monolith", "balance", "p99") not in table.index
    assert table.loc[("monolith", "balance", "error_rate"), "verdict"] == "missed"
    # login error rate 0 with unknown CI: met
    assert table.loc[("monolith", "login", "error_rate"), "verdict"] == "met"
    # bet error rate 0.001 ± 0.0005 vs 0.001: straddles
    assert table.loc[("monolith", "bet", "error_rate"), "verdict"] == "uncertain"
    row = table.loc[("microservices", "bet", "p99")]
    assert row["lower"] == pytest.approx(76.0) and row["upper"] == pytest.approx(84.0)
    # 2 archs x (login: p99, err; bet: p95, p99, p99.9, err; balance: err)
    assert len(table) == 2 * 7


def test_slo_table_uses_summary_target_without_meta_and_rejects_unknown_label() -> None:
    res = make_results()
    bare = Results(meta={}, summary=res.summary, stations=res.stations)
    table = bare.slo_table()
    assert set(table["metric"]) == {"p99"}
    assert len(table) == 4  # login and bet, two architectures
    odd = Results(meta={"slos": {"bet": {"p42": 1.0}}}, summary=res.summary,
                  stations=res.stations)
    with pytest.raises(ValueError, match=r"meta.slos.bet.p42"):
        odd.slo_table()


def test_slo_met_in_summary_follows_rule() -> None:
    res = make_results()
    s = res.summary.set_index(["architecture", "operation"])["slo_met"]
    assert bool(s[("monolith", "bet")]) is True
    assert bool(s[("microservices", "bet")]) is False
    assert s[("monolith", "balance")] is pd.NA


# ---------------------------------------------------------------------- compare


def test_compare() -> None:
    res = make_results()
    cmp = res.compare()
    assert list(cmp.index) == list(OPS)
    assert list(cmp.columns.get_level_values("architecture").unique()) == list(ARCHS)
    assert cmp.loc["bet", ("p99_ms", "monolith")] == 40.0
    assert cmp.loc["bet", ("p99_ms", "microservices")] == 80.0
    assert cmp.loc["balance", ("throughput_rps", "microservices")] == 102.0
    assert cmp.loc["login", ("p99_ms_ci", "monolith")] == pytest.approx(1.0)
