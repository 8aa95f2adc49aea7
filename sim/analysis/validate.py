"""Validation of the engine against queueing theory.

Each case builds a small scenario whose answer is known in closed form, simulates it with
the real engine (same code path as any scenario) with independent replications, and compares
the simulated mean against the formula. A case passes when the relative error is within the
tolerance (3%) or the formula lies inside the simulated 95% confidence interval.

Cases: M/M/1 and M/M/c (Erlang C) mean wait and response, and the p50/p99 of the wait
(stations' wait histograms); an M/M/1 processor-sharing station simulated past 2^14 s (the
float clock's resolution exceeds 1e-12 s there); an open Jackson network of three
processor-sharing stations with probabilistic routing (product form, BCMP); a closed network
with think time solved by exact mean value analysis; the fluid check of a hung station
(M/M/1 at rho stopped for D seconds drains its backlog lambda D at mu - lambda: back in
lambda D / (mu - lambda) after the restart, within 10%); the scenario language's cases
(``validate_language.py``) and contention's (``validate_contention.py``: locked rows as M/G/1
queues on their locks, optimistic aborts by the dead-time formula).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.analysis import analytic
from sim.model.scenario import Scenario, parse_scenario
from sim.runner import run

TOLERANCE = 0.03
FLUID_TOLERANCE = 0.10
SERVICE_MS = 10.0


@dataclass(frozen=True)
class Case:
    """One comparison: a scenario, the metric to read from the results, the exact value."""

    name: str
    metric: str
    expected: float
    scenario: Scenario
    read: Callable[[Any], tuple[float, float]]
    tolerance: float = TOLERANCE


def _exp(mean_ms: float) -> dict[str, Any]:
    return {"kind": "exponential", "mean_ms": mean_ms}


def _base(name: str, duration_s: float, reps: int, seed: int) -> dict[str, Any]:
    return {
        "name": name,
        "simulation": {
            "duration_s": duration_s, "replications": reps, "warmup": duration_s * 0.05,
            "seed": seed, "timeseries_bin_s": max(1.0, duration_s / 200),
        },
        "population": {"registered_players": 1000, "peak_online": 1000},
    }


def _open_rate(raw: dict[str, Any], lam: float) -> None:
    """Make the population generate ``lam`` arrivals/s, flat over the day."""
    per_min = 60.0 * lam / raw["population"]["peak_online"]
    raw["population"]["online_curve"] = [1.0] * 24
    raw["population"]["session"] = {"actions_per_minute": per_min}
    raw["population"]["whales"] = {"share": 0.0}


def _mmc_case(c: int, rho: float, customers: int, reps: int, seed: int) -> list[Case]:
    mu = 1000.0 / SERVICE_MS
    lam = rho * c * mu
    raw = _base(f"mm{c}_rho{rho}", customers / lam, reps, seed)
    _open_rate(raw, lam)
    step = {"component": "q", "cpu": _exp(SERVICE_MS)}
    raw["operations"] = {"job": {"weight": 1, "steps": [step]}}
    raw["deployments"] = [{
        "name": "queue", "kind": "monolith",
        "services": [{"name": "q", "components": ["q"], "workers": c, "cores": c}],
    }]
    scen = parse_scenario(raw, f"validate:{raw['name']}")
    m = analytic.mmc(lam, mu, c)
    station = "q[0].workers"

    def wq(res: Any) -> tuple[float, float]:
        row = res.stations.set_index("station").loc[station]
        return float(row["mean_wait_ms"]), float(row["mean_wait_ms_ci"])

    def w(res: Any) -> tuple[float, float]:
        row = res.summary.set_index("operation").loc["job"]
        return float(row["mean_ms"]), float(row["mean_ms_ci"])

    def wait_pct(col: str) -> Callable[[Any], tuple[float, float]]:
        def read(res: Any) -> tuple[float, float]:
            row = res.stations.set_index("station").loc[station]
            return float(row[col]), float(row[f"{col}_ci"])
        return read

    label = f"M/M/{c} rho={rho}"
    out = [
        Case(label, "mean wait Wq (ms)", m.wq * 1000.0, scen, wq),
        Case(label, "mean response W (ms)", m.w * 1000.0, scen, w),
    ]
    for q, col in ((0.5, "wait_p50_ms"), (0.99, "wait_p99_ms")):
        t = analytic.mmc_wait_quantile(lam, mu, c, q)
        if t > 0:  # a zero quantile has no relative error to speak of
            out.append(Case(label, f"wait p{q * 100:g} (ms)", t * 1000.0, scen, wait_pct(col)))
    return out


def _ps_day_case(rho: float, customers: int, reps: int, seed: int) -> list[Case]:
    """M/M/1 processor sharing past 2^14 s of simulated time: mean response S / (1 - rho)."""
    service_ms = 2000.0
    lam = rho / (service_ms / 1000.0)
    duration = max(customers / lam, 17_000.0)
    raw = _base(f"mm1_ps_rho{rho}", duration, reps, seed)
    raw["simulation"]["timeseries_bin_s"] = 100.0
    _open_rate(raw, lam)
    raw["operations"] = {"job": {"weight": 1, "steps": [
        {"component": "q", "cpu": _exp(service_ms)}]}}
    raw["deployments"] = [{
        "name": "ps", "kind": "monolith",
        "services": [{"name": "q", "components": ["q"], "workers": 100000, "cores": 1}],
    }]
    scen = parse_scenario(raw, f"validate:{raw['name']}")

    def w(res: Any) -> tuple[float, float]:
        row = res.summary.set_index("operation").loc["job"]
        return float(row["mean_ms"]), float(row["mean_ms_ci"])

    return [Case(f"M/M/1-PS rho={rho} {duration:.0f} s", "mean response W (ms)",
                 service_ms / (1.0 - rho), scen, w)]


def _jackson_case(rho_max: float, customers: int, reps: int, seed: int) -> list[Case]:
    """Three processor-sharing stations A, B, C; routes A-B-C (50%), A-C (30%), B (20%)."""
    lam = 1.0
    visits = {"a": 0.8, "b": 0.7, "c": 0.8}
    mus = {s: v * lam / rho_max for s, v in visits.items()}  # busiest stations at rho_max
    lam_total = 100.0
    scale = lam_total / lam
    ms = {s: 1000.0 / (mus[s] * scale) for s in visits}

    def step(s: str) -> dict[str, Any]:
        return {"component": s, "cpu": _exp(ms[s])}

    raw = _base(f"jackson_rho{rho_max}", customers / lam_total, reps, seed)
    _open_rate(raw, lam_total)
    raw["operations"] = {
        "abc": {"weight": 0.5, "steps": [step("a"), step("b"), step("c")]},
        "ac": {"weight": 0.3, "steps": [step("a"), step("c")]},
        "b": {"weight": 0.2, "steps": [step("b")]},
    }
    raw["deployments"] = [{
        "name": "network", "kind": "microservices", "entry": "front",
        "network_hop": {"kind": "constant", "value_ms": 0.0},
        "rpc_cpu": {"kind": "constant", "value_ms": 0.0},
        "services": [{"name": "front", "components": ["front"], "workers": 100000, "cores": 1}]
        + [{"name": s, "components": [s], "workers": 100000, "cores": 1} for s in visits],
    }]
    scen = parse_scenario(raw, f"validate:{raw['name']}")
    routing = np.array([[0.0, 0.5 / 0.8, 0.3 / 0.8], [0.0, 0.0, 0.5 / 0.7], [0.0, 0.0, 0.0]])
    ext = np.array([0.8, 0.2, 0.0]) * lam_total
    stations = analytic.jackson_open(ext, routing, [mus[s] * scale for s in visits], [1, 1, 1])
    expected = sum(st.l for st in stations) / lam_total * 1000.0

    def w(res: Any) -> tuple[float, float]:
        vals = np.asarray(_network_response(res))
        return float(vals.mean()), _hw(vals)

    return [Case(f"Jackson 3 stations rho={rho_max}", "mean network response (ms)", expected,
                 scen, w)]


def _mva_case(n: int, rho_hint: float, duration_s: float, reps: int, seed: int) -> list[Case]:
    """Closed network: n users, exponential think time, three PS stations in sequence."""
    demands_ms = [10.0, 6.0, 4.0]
    demands_s = [d / 1000.0 for d in demands_ms]
    think_ms = 1000.0 * analytic.mva_think_time_for_throughput(
        n, demands_s, rho_hint / max(demands_s))
    raw = _base(f"mva_n{n}", duration_s, reps, seed)
    raw["simulation"]["closed"] = {"users": n, "think_time": _exp(think_ms)}
    names = ["a", "b", "c"]
    raw["operations"] = {"job": {"weight": 1, "steps": [
        {"component": s, "cpu": _exp(d)} for s, d in zip(names, demands_ms, strict=True)]}}
    raw["deployments"] = [{
        "name": "closed", "kind": "microservices", "entry": "front",
        "network_hop": {"kind": "constant", "value_ms": 0.0},
        "rpc_cpu": {"kind": "constant", "value_ms": 0.0},
        "services": [{"name": "front", "components": ["front"], "workers": 100000, "cores": 1}]
        + [{"name": s, "components": [s], "workers": 100000, "cores": 1} for s in names],
    }]
    scen = parse_scenario(raw, f"validate:{raw['name']}")
    res = analytic.mva_closed(n, demands_s, think_time=think_ms / 1000.0)

    def x(r: Any) -> tuple[float, float]:
        row = r.summary.set_index("operation").loc["job"]
        return float(row["throughput_rps"]), float(row["throughput_rps_ci"])

    def resp(r: Any) -> tuple[float, float]:
        row = r.summary.set_index("operation").loc["job"]
        return float(row["mean_ms"]), float(row["mean_ms_ci"])

    label = f"closed MVA N={n} U={res.throughput * demands_s[0]:.2f}"
    return [
        Case(label, "throughput X (req/s)", res.throughput, scen, x),
        Case(label, "response R (ms)", res.response_time * 1000.0, scen, resp),
    ]


def fluid_case(rho: float, down_s: float, reps: int, seed: int,
               service_ms: float = SERVICE_MS) -> Case:
    """One M/M/1 station at ``rho``, hung (requests wait) for ``down_s`` seconds: the backlog
    lambda D drains at mu - lambda, so the queue is back lambda D / (mu - lambda) after the
    restart (fluid approximation). Read: ``drained_s`` of the recovery table."""
    mu = 1000.0 / service_ms
    lam = rho * mu
    drain = lam * down_s / (mu - lam)
    at = max(20.0, 2000.0 / lam)  # a steady level before the fault
    raw = _base(f"fluid_rho{rho}_D{down_s:g}", at + down_s + 2.0 * drain + 20.0, reps, seed)
    raw["simulation"]["timeseries_bin_s"] = 1.0
    raw["simulation"]["warmup"] = 0.0
    _open_rate(raw, lam)
    raw["operations"] = {"job": {"weight": 1, "steps": [
        {"component": "q", "cpu": _exp(service_ms)}]}}
    raw["deployments"] = [{
        "name": "station", "kind": "monolith",
        "services": [{"name": "q", "components": ["q"], "workers": 1, "cores": 1}],
    }]
    raw["faults"] = [{"kind": "hang", "target": "q", "at_s": at, "duration_s": down_s}]
    raw["slos"] = {"latency_ms": {"job": {"p99": 1000.0 * down_s}}}
    scen = parse_scenario(raw, f"validate:{raw['name']}")

    def drained(res: Any) -> tuple[float, float]:
        row = res.recovery.iloc[0]
        return float(row["drained_s"]), float(row["drained_s_ci"])

    return Case(f"fluid: M/M/1 rho={rho} hung {down_s:g} s", "recovery after restart (s)",
                drain, scen, drained, FLUID_TOLERANCE)


def _hw(vals: np.ndarray) -> float:
    from sim.analysis.output_analysis import confidence_interval

    return float(confidence_interval(vals)[1]) if len(vals) > 1 else math.nan


def cases(quick: bool = False, seed: int = 7) -> list[Case]:
    """The validation suite; ``quick`` uses fewer customers (for unit tests)."""
    scale = 0.15 if quick else 1.0
    out: list[Case] = []
    for rho in (0.5, 0.8, 0.95):
        cust = int((400_000 if rho < 0.9 else 1_600_000) * scale)
        # Near saturation a replication's mean wait is strongly right-skewed (rare long
        # excursions): 5 replications gave a t-interval that missed M/M/1 at rho 0.95 by 2.2
        # half-widths (seed 7: 198.6 +- 3.9 ms vs 190); 10 keep the interval honest.
        reps = 5 if rho < 0.9 else 10
        # The M/M/c cases also check the p99 of the wait: a replication's p99 rests on its
        # ~1% tail (a few hundred waits in the quick cases), skewed across replications, and
        # 5 replications under-covered it (quick M/M/1 rho 0.5, seed 7: 81.3 +- 2.3 ms vs
        # 78.2, while seeds 1-5 all passed): they get 10.
        out += _mmc_case(1, rho, cust, max(reps, 10), seed)
        out += _mmc_case(8, rho, cust, max(reps, 10), seed + 1)
        out += _jackson_case(rho, int(cust / 2), reps, seed + 2)
    for n, rho in ((5, 0.5), (20, 0.8), (40, 0.95)):
        out += _mva_case(n, rho, 600.0 * scale, 5, seed + 3)
    out += _ps_day_case(0.5, int(8_500 * scale), 5, seed + 4)
    out.append(fluid_case(0.5, 30.0 if quick else 60.0, 5 if quick else 10, seed + 5))
    from sim.analysis.validate_contention import contention_cases
    from sim.analysis.validate_host import host_cases
    from sim.analysis.validate_language import language_cases

    out += language_cases(scale, seed)
    out += contention_cases(scale, seed)
    out += host_cases(scale, seed)
    return out


def _network_response(res: Any) -> list[float]:
    """Per-replication mean response over all operations (weighted by requests)."""
    ts = res.timeseries
    cut = res.meta["warmup_s"]
    vals = []
    for _, g in ts.groupby("replication"):
        g = g[g["t_s"] >= min(cut.values())]
        vals.append(float((g["mean_ms"] * g["requests"]).sum() / g["requests"].sum()))
    return vals


def evaluate(case_list: list[Case], jobs: int | None = None,
             progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run every case and return the comparison table (one row per case and metric)."""
    rows = []
    cache: dict[int, Any] = {}
    for case in case_list:
        key = id(case.scenario)
        if key not in cache:
            if progress is not None:
                progress(case.name)
            cache[key] = run(case.scenario, jobs=jobs)
        sim_mean, hw = case.read(cache[key])
        rel = (sim_mean - case.expected) / case.expected
        inside = not math.isnan(hw) and abs(sim_mean - case.expected) <= hw
        rows.append({
            "case": case.name,
            "metric": case.metric,
            "theory": case.expected,
            "simulated": sim_mean,
            "ci95": hw,
            "rel_error": rel,
            "pass": bool(abs(rel) <= case.tolerance or inside),
        })
    return pd.DataFrame(rows)
