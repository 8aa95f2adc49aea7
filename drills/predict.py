"""Predicted against measured: the simulator runs a scenario (its demands, its deployment
named like the drill's topology) with the drill's own faults, at the drill's rate, for the
drill's duration, and its recovery table is set beside the drill's.

The faults are translated from what the drill *did*, not what it was asked: a kill becomes
a crash whose down time is the measured time until ``/health`` answered again (boot
included, so ``boot_s`` is 0), a failover a ``db_failover`` as long as the measured one.
The simulator predicts the consequences of a trigger of known length; the trigger's length
itself (a Python process's start-up on a busy machine) is an input, not a prediction.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import sim
from drills.faults import Fault
from sim.analysis.recovery import FaultWindow
from sim.model.scenario import Scenario, ScenarioError
from sim.reports.results import Results

COMPONENT_OF = {"monolith": "wallet", "edge": "wallet"}
"""The scenario component a drill service stands for (the monolith and hybrid's edge host
the wallet; the other services are named as their component)."""
COMPARED = ("resume_s", "slo_restored_s", "failed", "timed_out", "not_ok", "lost_transactions")
NOT_OK = ("failed", "timed_out", "shed")
"""``not_ok`` is their sum: the simulator counts a call its breaker or bulkhead refused as
``shed`` where the drill's generator sees a 503 (``failed``), so the categories compare only
summed. Its interval is not derived (the parts' intervals do not add)."""


def _with_not_ok(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["not_ok"] = sum(out[c].fillna(0.0) for c in NOT_OK if c in out.columns)
    return out


def scenario_faults(faults: tuple[Fault, ...], windows: list[FaultWindow],
                    database: str) -> list[dict[str, Any]]:
    """The scenario language's ``faults:`` for what the drill did."""
    out: list[dict[str, Any]] = []
    measured = {w.name: w for w in windows}
    for f in faults:
        w = measured.get(f.text)
        if w is None:
            continue
        down = max(w.end_s - w.start_s, 0.001)
        target = COMPONENT_OF.get(f.service, f.service)
        base = {"name": f.text, "at_s": w.start_s}
        if f.kind == "kill":
            out.append({**base, "kind": "crash", "target": target, "duration_s": down,
                        "boot_s": 0.0})
        elif f.kind == "hang":
            out.append({**base, "kind": "hang", "target": target, "duration_s": down})
        elif f.kind in ("db-failover", "db-restart"):
            out.append({**base, "kind": "db_failover", "target": database, "duration_s": down})
        elif f.kind == "broker-down":
            out.append({**base, "kind": "broker_outage", "duration_s": down})
        elif f.kind == "latency":
            out.append({**base, "kind": "network", "source": COMPONENT_OF.get(f.source, f.source),
                        "target": target, "latency_ms": f.delay_ms, "duration_s": down})
    return out


def mirror(path: Path, deployment: str, faults: list[dict[str, Any]], rate: float,
           duration_s: float, window_s: float, hold_s: float | None,
           replication: str | None, slo: tuple[str, float] | None) -> Scenario:
    """The scenario at ``path``, reduced to ``deployment``, driven at ``rate`` requests/s
    (an open workload in the scenario's operation mix; the population reduced to one
    player) with ``faults``; ScenarioError naming the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(str(path), [("", str(exc))]) from exc
    deps = [d for d in data.get("deployments", []) if d.get("name") == deployment]
    if not deps:
        raise ScenarioError(str(path), [("deployments", f"no deployment named {deployment!r} "
                                                        "to compare with the drill")])
    data["deployments"] = deps
    if replication is not None:
        for db in deps[0].get("databases", []):
            db["replication"] = replication
    data["population"] = {**data.get("population", {}), "peak_online": 1,
                          "online_curve": [1.0] * 24}
    data["population"].pop("spikes", None)
    weights = {k: float(v.get("weight", 0)) for k, v in data["operations"].items()
               if float(v.get("weight", 0)) > 0}
    data["workloads"] = [{"name": "drill", "operations": weights, "rate_rps": rate}]
    data["simulation"] = {**data.get("simulation", {}), "duration_s": duration_s,
                          "warmup": 0, "reduce": False}
    data["faults"] = faults
    data["recovery"] = {"window_s": window_s, "hold_s": hold_s}
    if slo is not None:
        op, target = slo
        data.setdefault("slos", {}).setdefault("latency_ms", {}).setdefault(op, {})["p99"] = target
    try:
        return Scenario.model_validate(data)
    except ValueError as exc:
        raise ScenarioError(f"{path} (as the drill's mirror)", [("", str(exc))]) from exc


def predict(path: Path, deployment: str, faults: tuple[Fault, ...], windows: list[FaultWindow],
            rate: float, duration_s: float, window_s: float, hold_s: float | None,
            replication: str | None, slo: tuple[str, float] | None) -> Results:
    """Simulate the mirror scenario (its own replications, confidence intervals)."""
    data = yaml.safe_load(path.read_text())
    dep = next((d for d in data.get("deployments", []) if d.get("name") == deployment), {})
    database = (dep.get("databases") or [{"name": "main"}])[0]["name"]
    sc = mirror(path, deployment, scenario_faults(faults, windows, database), rate,
                duration_s, window_s, hold_s, replication, slo)
    return sim.run(sc, deployments=[deployment], jobs=1)


def side_by_side(measured: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """Per fault and operation in both tables: each compared metric measured, predicted
    (mean and 95% half-width) and the prediction's error relative to the measurement."""
    rows = []
    keys = ["fault", "operation"]
    measured, predicted = _with_not_ok(measured), _with_not_ok(predicted)
    cis = [f"{m}_ci" for m in COMPARED if f"{m}_ci" in predicted.columns]
    both = measured[keys + list(COMPARED)].merge(
        predicted[keys + list(COMPARED) + cis].rename(columns={c: f"{c}_p" for c in cis}),
        on=keys, suffixes=("_m", "_p"))
    for r in both.to_dict("records"):
        for m in COMPARED:
            got, want = float(r[f"{m}_p"]), float(r[f"{m}_m"])
            err = (got - want) / want if want and math.isfinite(want) and math.isfinite(got) \
                else math.nan
            rows.append({"fault": r["fault"], "operation": r["operation"], "metric": m,
                         "measured": want, "predicted": got,
                         "predicted_ci": float(r.get(f"{m}_ci_p", math.nan)),
                         "error": err})
    return pd.DataFrame(rows)
