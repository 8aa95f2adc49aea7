"""Validation cases for the scenario language's call graphs, branches, caches, read replicas,
explicit rates and mixed workloads (part of `testbed validate --analytic`).

Each case is a small scenario with an exact answer:

* nested calls: a single-worker service holding its worker while it calls a service that
  calls a third is an M/G/1 queue whose service time is the sum of the three demands and
  the hops (Pollaczek-Khinchine); a call that did not hold its caller's worker would be far
  off;
* branching: a step taken with probability p is a Jackson network with visit ratio p;
* cache: lookups at the arrival rate on the cache's processor-sharing core, misses (1 - h)
  on the database's: two M/M/1-PS stations;
* read replicas: reads spread at random over R replicas are R Poisson streams of rate
  r / R, writes one stream on the primary;
* explicit rates: an operation at ``rate_rps`` on M/M/1; a workload following a rate table
  delivers its integral;
* mixed workloads: closed users (think, request) and an open stream sharing one
  processor-sharing station, solved by mixed mean value analysis.
"""

from __future__ import annotations

from typing import Any

from sim.analysis import analytic
from sim.analysis.validate import Case, _base, _exp, _open_rate
from sim.model.scenario import parse_scenario

ZERO = {"kind": "constant", "value_ms": 0.0}
PS = {"workers": 100000, "cores": 1}  # a processor-sharing station with one core


def _net(raw: dict[str, Any], services: list[dict[str, Any]], hop_ms: float = 0.0,
         **deployment: Any) -> None:
    raw["deployments"] = [{
        "name": "d", "kind": "microservices", "entry": "front",
        "network_hop": {"kind": "constant", "value_ms": hop_ms}, "rpc_cpu": ZERO,
        "services": [{"name": "front", "components": ["front"], **PS}, *services],
    } | deployment]


def _mean(op: str) -> Any:
    def read(res: Any) -> tuple[float, float]:
        row = res.summary.set_index("operation").loc[op]
        return float(row["mean_ms"]), float(row["mean_ms_ci"])
    return read


def _rate(op: str) -> Any:
    def read(res: Any) -> tuple[float, float]:
        row = res.summary.set_index("operation").loc[op]
        return float(row["throughput_rps"]), float(row["throughput_rps_ci"])
    return read


def nested_case(rho: float, customers: int, reps: int, seed: int) -> list[Case]:
    """a (1 worker) calls b, which calls c: M/G/1 with S = Xa + Xb + Xc + 4 hops."""
    ms = {"a": 4.0, "b": 3.0, "c": 2.0}
    hop = 0.2
    mean_s = (sum(ms.values()) + 4 * hop) / 1000.0
    var_s = sum((m / 1000.0) ** 2 for m in ms.values())
    lam = rho / mean_s
    raw = _base(f"nested_rho{rho}", customers / lam, reps, seed)
    _open_rate(raw, lam)
    raw["operations"] = {"job": {"weight": 1, "steps": [
        {"component": "a", "cpu": _exp(ms["a"]), "calls": [
            {"component": "b", "cpu": _exp(ms["b"]), "calls": [
                {"component": "c", "cpu": _exp(ms["c"])}]}]}]}}
    _net(raw, [{"name": "a", "components": ["a"], "workers": 1, "cores": 1},
               {"name": "b", "components": ["b"], **PS},
               {"name": "c", "components": ["c"], **PS}], hop_ms=hop)
    m = analytic.mg1(lam, mean_s, var_s / mean_s**2)
    expected = (m.w + 2 * hop / 1000.0) * 1000.0
    scen = parse_scenario(raw, f"validate:{raw['name']}")
    return [Case(f"nested calls depth 3 M/G/1 rho={rho}", "mean response (ms)", expected, scen,
                 _mean("job"))]


def branch_case(customers: int, reps: int, seed: int) -> list[Case]:
    """Step a always, step b with probability 0.3: W = Wa + 0.3 Wb (M/M/1-PS each)."""
    lam, p = 70.0, 0.3
    ms_a, ms_b = 10.0, 1000.0 * 0.6 / (p * lam)  # rho_a 0.7, rho_b 0.6
    raw = _base("branch", customers / lam, reps, seed)
    _open_rate(raw, lam)
    raw["operations"] = {"job": {"weight": 1, "steps": [
        {"component": "a", "cpu": _exp(ms_a)},
        {"component": "b", "cpu": _exp(ms_b), "probability": p}]}}
    _net(raw, [{"name": "a", "components": ["a"], **PS},
               {"name": "b", "components": ["b"], **PS}])
    wa = analytic.mm1(lam, 1000.0 / ms_a).w
    wb = analytic.mm1(p * lam, 1000.0 / ms_b).w
    scen = parse_scenario(raw, "validate:branch")
    return [Case("branch p=0.3 (Jackson)", "mean response (ms)", (wa + p * wb) * 1000.0, scen,
                 _mean("job"))]


def cache_case(customers: int, reps: int, seed: int) -> list[Case]:
    """Every request looks up the cache (hit 0.8); misses read the database."""
    lam, hit = 70.0, 0.8
    ms_cache, ms_db = 10.0, 1000.0 * 0.7 / ((1 - hit) * lam)
    raw = _base("cache", customers / lam, reps, seed)
    _open_rate(raw, lam)
    raw["operations"] = {"job": {"weight": 1, "steps": [
        {"component": "a", "db": _exp(ms_db), "cache": "c"}]}}
    raw["deployments"] = [{
        "name": "d", "kind": "monolith",
        "services": [{"name": "a", "components": ["a"], **PS, "db_pool": 100000,
                      "database": "db"}],
        "databases": [{"name": "db", "cores": 1, "max_connections": 100000}],
        "caches": [{"name": "c", "hit_ratio": hit, "lookup": _exp(ms_cache)}],
    }]
    w_cache = analytic.mm1(lam, 1000.0 / ms_cache).w
    w_db = analytic.mm1((1 - hit) * lam, 1000.0 / ms_db).w
    scen = parse_scenario(raw, "validate:cache")
    return [Case("cache hit 0.8", "mean response (ms)", (w_cache + (1 - hit) * w_db) * 1000.0,
                 scen, _mean("job"))]


def replicas_case(customers: int, reps: int, seed: int) -> list[Case]:
    """70% reads spread over 2 read replicas, 30% writes on the primary."""
    lam, share, n_rep = 100.0, 0.7, 2
    ms_read = 1000.0 * 0.7 / (share * lam / n_rep)
    ms_write = 1000.0 * 0.6 / ((1 - share) * lam)
    raw = _base("replicas", customers / lam, reps, seed)
    _open_rate(raw, lam)
    raw["operations"] = {
        "read": {"weight": share, "steps": [
            {"component": "a", "db": _exp(ms_read), "read": True}]},
        "write": {"weight": 1 - share, "steps": [{"component": "a", "db": _exp(ms_write)}]},
    }
    raw["deployments"] = [{
        "name": "d", "kind": "monolith",
        "services": [{"name": "a", "components": ["a"], **PS, "db_pool": 100000,
                      "database": "db"}],
        "databases": [{"name": "db", "cores": 1, "max_connections": 100000,
                       "read_replicas": n_rep, "replication_lag_ms": 5}],
    }]
    w_read = analytic.mm1(share * lam / n_rep, 1000.0 / ms_read).w * 1000.0
    w_write = analytic.mm1((1 - share) * lam, 1000.0 / ms_write).w * 1000.0
    scen = parse_scenario(raw, "validate:replicas")
    label = "read replicas 2, reads 70%"
    return [Case(label, "read mean response (ms)", w_read, scen, _mean("read")),
            Case(label, "write mean response (ms)", w_write, scen, _mean("write"))]


def rate_cases(customers: int, reps: int, seed: int) -> list[Case]:
    """An operation at rate_rps on M/M/1; a workload following a ramp rate table."""
    lam, ms = 80.0, 10.0
    raw = _base("rate_rps", customers / lam, reps, seed)
    raw["operations"] = {
        "idle": {"weight": 0, "steps": [{"component": "q", "cpu": _exp(ms)}]},
        "job": {"weight": 0, "rate_rps": lam, "steps": [{"component": "q", "cpu": _exp(ms)}]},
    }
    raw["deployments"] = [{"name": "d", "kind": "monolith", "services": [
        {"name": "q", "components": ["q"], "workers": 1, "cores": 1}]}]
    out = [Case("explicit rate_rps M/M/1 rho=0.8", "mean response (ms)",
                analytic.mm1(lam, 1000.0 / ms).w * 1000.0,
                parse_scenario(raw, "validate:rate_rps"), _mean("job"))]
    duration = customers / 100.0
    raw = _base("rate_table", duration, reps, seed + 1)
    raw["simulation"]["warmup"] = 0
    raw["operations"] = {"job": {"weight": 0, "steps": [{"component": "q", "cpu": _exp(1.0)}]}}
    raw["workloads"] = [{"name": "ramp", "operations": {"job": 1},
                         "rate_table": [{"t_s": 0, "rps": 50}, {"t_s": duration, "rps": 150}]}]
    raw["deployments"] = [{"name": "d", "kind": "monolith", "services": [
        {"name": "q", "components": ["q"], **PS}]}]
    out.append(Case("rate table 50->150 req/s", "throughput (req/s)", 100.0,
                    parse_scenario(raw, "validate:rate_table"), _rate("job")))
    return out


def mixed_case(duration_s: float, reps: int, seed: int) -> list[Case]:
    """10 closed users (think 50 ms) and an open stream at 40 req/s on one PS station."""
    n, think_ms, d_closed_ms, d_open_ms, lam = 10, 50.0, 5.0, 8.0, 40.0
    raw = _base("mixed", duration_s, reps, seed)
    _open_rate(raw, lam)
    raw["operations"] = {
        "bet": {"weight": 1, "steps": [{"component": "q", "cpu": _exp(d_open_ms)}]},
        "report": {"weight": 0, "steps": [{"component": "q", "cpu": _exp(d_closed_ms)}]},
    }
    raw["workloads"] = [{"name": "batch", "operations": {"report": 1}, "users": n,
                         "think_time": _exp(think_ms)}]
    raw["deployments"] = [{"name": "d", "kind": "monolith", "services": [
        {"name": "q", "components": ["q"], **PS}]}]
    res = analytic.mva_mixed(n, [d_closed_ms / 1000.0], think_ms / 1000.0, lam,
                             [d_open_ms / 1000.0])
    scen = parse_scenario(raw, "validate:mixed")
    label = f"mixed closed N={n} + open {lam:g}/s"
    return [Case(label, "closed throughput (req/s)", res.closed_throughput, scen,
                 _rate("report")),
            Case(label, "closed response (ms)", res.closed_response * 1000.0, scen,
                 _mean("report")),
            Case(label, "open response (ms)", res.open_response * 1000.0, scen, _mean("bet"))]


def language_cases(scale: float, seed: int) -> list[Case]:
    """Every case of this module at ``scale`` (1.0 for `testbed validate --analytic`)."""
    cust = int(200_000 * scale)
    return [
        *nested_case(0.7, cust, 5, seed + 10),
        *branch_case(cust, 5, seed + 11),
        *cache_case(cust, 5, seed + 12),
        *replicas_case(cust, 5, seed + 13),
        *rate_cases(cust, 5, seed + 14),
        *mixed_case(2000.0 * scale, 5, seed + 15),
    ]
