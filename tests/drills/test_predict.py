"""Predicted against measured: the drill's faults as the scenario language says them, the
mirror scenario (the drill's rate, duration and deployment), the side-by-side table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from drills.faults import parse_fault
from drills.predict import mirror, scenario_faults, side_by_side
from sim.analysis.recovery import FaultWindow
from sim.model.scenario import ScenarioError

ROOT = Path(__file__).resolve().parents[2]
CALIBRATED = ROOT / "benchmarks" / "validation" / "micro_pg_calibrated.yaml"


def _w(name: str, start: float, end: float) -> FaultWindow:
    return FaultWindow(name=name, kind="", target="", start_s=start, end_s=end)


def test_faults_take_the_measured_windows() -> None:
    texts = ["kill:wallet@10", "hang:fraud@10+5", "db-failover@20", "broker-down@3+2",
             "latency:gateway->wallet@4+1:80"]
    faults = tuple(parse_fault(t, topology="microservices", db="postgresql", duration_s=60)
                   for t in texts)
    windows = [_w("kill:wallet@10", 10.0, 12.7), _w("hang:fraud@10+5", 10.01, 15.02),
               _w("db-failover@20", 20.0, 22.5), _w("broker-down@3+2", 3.0, 5.0),
               _w("latency:gateway->wallet@4+1:80", 4.0, 5.0)]
    out = scenario_faults(faults, windows, "main")
    assert [f["kind"] for f in out] == ["crash", "hang", "db_failover", "broker_outage",
                                        "network"]
    crash = out[0]
    assert crash["target"] == "wallet" and crash["boot_s"] == 0
    assert crash["duration_s"] == pytest.approx(2.7)  # the measured down time, boot included
    assert out[2]["target"] == "main" and out[2]["duration_s"] == pytest.approx(2.5)
    assert out[4]["latency_ms"] == 80 and out[4]["source"] == "gateway"
    kill = parse_fault("kill:monolith@1", topology="monolith", db="sqlite", duration_s=9)
    assert scenario_faults((kill,), [_w(kill.text, 1, 3)], "main")[0]["target"] == "wallet"
    assert scenario_faults(faults, [], "main") == []  # a fault that never happened


def test_mirror_runs_the_drill_rate_on_one_deployment() -> None:
    faults = [{"kind": "crash", "target": "wallet", "at_s": 5.0, "duration_s": 2.0,
               "boot_s": 0.0, "name": "kill:wallet@5"}]
    sc = mirror(CALIBRATED, "microservices", faults, 40.0, 20.0, 3.0, 5.0, "sync",
                ("bet", 250.0))
    assert [d.name for d in sc.deployments] == ["microservices"]
    assert sc.workloads[0].rate_rps == 40.0 and sc.simulation.duration_s == 20.0
    assert sc.slos.latency_ms["bet"].p99 == 250.0
    assert sc.recovery.window_s == 3.0 and sc.recovery.hold_s == 5.0
    with pytest.raises(ScenarioError, match="no deployment named 'hybrid'"):
        mirror(CALIBRATED, "hybrid", faults, 40.0, 20.0, 3.0, 5.0, None, None)
    bad = [{**faults[0], "target": "nowhere"}]
    with pytest.raises(ScenarioError, match="mirror"):
        mirror(CALIBRATED, "microservices", bad, 40.0, 20.0, 3.0, 5.0, None, None)


def test_side_by_side_errors_are_relative_to_the_measurement() -> None:
    cols = {"resume_s": 4.0, "slo_restored_s": math.nan, "failed": 100.0, "timed_out": 0.0,
            "lost_transactions": 0.0}
    measured = pd.DataFrame([{"fault": "f", "operation": "bet", **cols}])
    predicted = pd.DataFrame([{"fault": "f", "operation": "bet", "resume_s": 5.0,
                               "resume_s_ci": 0.5, "slo_restored_s": 3.0, "failed": 80.0,
                               "timed_out": 0.0, "lost_transactions": 0.0},
                              {"fault": "f", "operation": "win", **cols}])
    t = side_by_side(measured, predicted).set_index("metric")
    assert len(t) == 6  # only (fault, operation) in both
    assert t.loc["resume_s", "error"] == pytest.approx(0.25)
    assert t.loc["resume_s", "predicted_ci"] == 0.5
    assert t.loc["failed", "error"] == pytest.approx(-0.2)
    assert math.isnan(t.loc["slo_restored_s", "error"])  # nothing measured to compare with
    assert math.isnan(t.loc["timed_out", "error"])  # no relative error against zero


def test_not_ok_sums_the_outcomes_a_breaker_and_a_503_name_differently() -> None:
    # the simulator's breaker refusals are "shed", the drill's generator sees 503s ("failed")
    keys = {"fault": "f", "operation": "bet", "resume_s": 7.0, "slo_restored_s": math.nan,
            "timed_out": 0.0, "lost_transactions": 0.0}
    measured = pd.DataFrame([{**keys, "failed": 128.0, "shed": 0.0}])
    predicted = pd.DataFrame([{**keys, "failed": 0.0, "timed_out": 2.0, "shed": 87.0}])
    t = side_by_side(measured, predicted).set_index("metric")
    assert t.loc["not_ok", "measured"] == 128.0 and t.loc["not_ok", "predicted"] == 89.0
    assert t.loc["not_ok", "error"] == pytest.approx(89 / 128 - 1)
    assert t.loc["failed", "predicted"] == 0.0  # the parts are still shown as they are
