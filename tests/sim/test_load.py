"""The offered load before a run knows the whole language: hand computations per feature,
and the simulated utilisation of random small stable topologies matches the prediction."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sim.engine.core import Engine
from sim.engine.sources import plan_sources
from sim.model.load import CLOSED_BOUND, OPEN, offered_load
from sim.model.scenario import ScenarioError, parse_scenario
from sim.model.topology import compile_topology
from sim.reports.report import saturation_lines
from sim.runner import saturation


def _c(ms: float) -> dict[str, Any]:
    return {"kind": "constant", "value_ms": ms}


def _scen(ops: dict[str, Any], services: list[dict[str, Any]], **extra: Any) -> Any:
    dep = {"name": "d", "kind": "microservices", "network_hop": _c(1), "rpc_cpu": _c(0.5),
           "services": services} | extra.pop("dep", {})
    raw = {"name": "t", "simulation": {"duration_s": 100}, "operations": ops,
           "deployments": [dep]} | extra
    return parse_scenario(raw)


def _load(scen: Any) -> dict[str, float]:
    return {o.station: o.utilisation for o in offered_load(scen)}


def _svc(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "components": [name], "cores": 1, "workers": 10} | kw


def test_nested_calls_hold_every_callers_worker() -> None:
    # 10/s: a (cpu 1) -> b (cpu 2) -> c (cpu 3); rpc 0.5 ms each side, hop 1 ms each way
    steps = [{"component": "a", "cpu": _c(1), "calls": [
        {"component": "b", "cpu": _c(2), "calls": [{"component": "c", "cpu": _c(3)}]}]}]
    load = _load(_scen({"x": {"weight": 0, "rate_rps": 10, "steps": steps}},
                       [_svc("a"), _svc("b"), _svc("c")]))
    c_hold = 0.5 + 3                       # callee RPC + work
    b_hold = 0.5 + 2 + (0.5 + 2 * 1) + c_hold   # + its call's caller RPC and hops
    a_hold = 1 + (0.5 + 2 * 1) + b_hold
    assert load["c[*].workers"] == pytest.approx(10 * c_hold / 1000 / 10)
    assert load["b[*].workers"] == pytest.approx(10 * b_hold / 1000 / 10)
    assert load["a[*].workers"] == pytest.approx(10 * a_hold / 1000 / 10)
    assert load["b[*].cpu"] == pytest.approx(10 * (2 + 0.5 + 0.5) / 1000)  # callee + caller RPC
    assert load["c[*].cpu"] == pytest.approx(10 * 3.5 / 1000)


def test_branch_probabilities_multiply_down_the_call_graph() -> None:
    steps = [{"component": "a", "cpu": _c(1), "probability": 0.5, "calls": [
        {"component": "a", "cpu": _c(4), "probability": 0.25}]}]
    svcs = [{"name": "app", "components": ["a"], "cores": 2, "workers": 10}]
    load = _load(_scen({"x": {"weight": 0, "rate_rps": 100, "steps": steps}}, svcs,
                       dep={"kind": "monolith"}))
    # 100/s x (0.5 x 1 ms + 0.125 x 4 ms) on 2 cores
    assert load["app[*].cpu"] == pytest.approx(100 * (0.5 + 0.5) / 1000 / 2)


def test_cache_misses_go_to_the_database_and_reads_to_replicas() -> None:
    ops = {"read": {"weight": 0, "rate_rps": 200, "steps": [
               {"component": "a", "db": _c(5), "cache": "c", "read": True}]},
           "write": {"weight": 0, "rate_rps": 50, "steps": [{"component": "a", "db": _c(2)}]}}
    svcs = [_svc("a", db_pool=20, database="db", replicas=2)]
    scen = _scen(ops, svcs, dep={
        "kind": "monolith",
        "databases": [{"name": "db", "cores": 2, "read_replicas": 3, "shards": 2}],
        "caches": [{"name": "c", "hit_ratio": 0.8, "lookup": _c(0.5), "cores": 1,
                    "shards": 2}]})
    load = _load(scen)
    assert load["cache:c[*].cpu"] == pytest.approx(200 * 0.5 / 1000 / 2)   # every lookup
    # misses (20%) on 2 shards x 3 replicas x 2 cores; writes on the 2 primaries
    assert load["db[*].replica[*].cpu"] == pytest.approx(200 * 0.2 * 5 / 1000 / (2 * 3 * 2))
    assert load["db[*].cpu"] == pytest.approx(50 * 2 / 1000 / (2 * 2))
    # a connection is held for the database time only (a miss's or a write's)
    assert load["a[*].db_pool"] == pytest.approx((200 * 0.2 * 5 + 50 * 2) / 1000 / (20 * 2))
    # the worker holds the lookup too
    assert load["a[*].workers"] == pytest.approx(
        (200 * (0.5 + 0.2 * 5) + 50 * 2) / 1000 / (10 * 2))


def test_explicit_rates_and_rate_tables_count_at_their_peak() -> None:
    ops = {"x": {"weight": 0, "rate_table": [{"t_s": 0, "rps": 10}, {"t_s": 40, "rps": 300},
                                             {"t_s": 80, "rps": 20}],
                 "steps": [{"component": "a", "cpu": _c(2)}]},
           "y": {"weight": 0, "steps": [{"component": "a", "cpu": _c(1)}]}}
    svcs = [_svc("a")]
    wl = [{"name": "w", "operations": {"y": 1}, "rate_rps": 100}]
    load = next(o for o in offered_load(_scen(ops, svcs, workloads=wl))
                if o.station == "a[*].cpu")
    assert load.utilisation == pytest.approx((300 * 2 + 100 * 1) / 1000)
    assert load.at_s == 40 and load.basis == OPEN


def test_population_and_workload_add_up() -> None:
    ops = {"x": {"weight": 1, "rate_rps": 50, "steps": [{"component": "a", "cpu": _c(2)}]}}
    pop = {"registered_players": 1000, "peak_online": 600, "online_curve": [1.0] * 24,
           "session": {"actions_per_minute": 10}}
    load = _load(_scen(ops, [_svc("a")], population=pop))
    assert load["a[*].cpu"] == pytest.approx((600 * 10 / 60 + 50) * 2 / 1000)


def test_closed_workloads_are_bounded_by_users_over_the_cycle() -> None:
    ops = {"x": {"weight": 0, "rate_rps": 100, "steps": [{"component": "a", "cpu": _c(2)}]},
           "r": {"weight": 0, "steps": [{"component": "a", "cpu": _c(8)}]}}
    wl = [{"name": "batch", "operations": {"r": 1}, "users": 4, "think_time": _c(92)}]
    load = next(o for o in offered_load(_scen(ops, [_svc("a")], workloads=wl))
                if o.station == "a[*].cpu")
    # 4 users / (92 ms think + 8 ms least response) = 40/s, x 8 ms; plus 100/s x 2 ms
    assert load.utilisation == pytest.approx(40 * 8 / 1000 + 100 * 2 / 1000)
    assert load.basis == CLOSED_BOUND and "closed bound" in load.text()


def test_closed_loop_without_think_time_nor_demand_is_not_a_division_by_zero() -> None:
    ops = {"x": {"weight": 1, "steps": [{"component": "a", "cpu": _c(0)}]}}
    scen = _scen(ops, [_svc("a")], simulation={"duration_s": 10,
                                                "closed": {"users": 3}})
    assert all(o.utilisation == 0.0 for o in offered_load(scen))  # no demand: no load
    ops = {"x": {"weight": 1, "steps": [{"component": "a", "mode": "async", "cpu": _c(1)}]}}
    scen = _scen(ops, [{"name": "app", "components": ["a"]}], dep={"kind": "monolith"},
                 simulation={"duration_s": 10, "closed": {"users": 3}})
    assert _load(scen)["app[*].cpu"] == np.inf   # users publishing in no time: saturated


def test_all_weights_zero_is_zero_population_load_or_a_clear_error() -> None:
    ops = {"x": {"weight": 0, "steps": [{"component": "a", "cpu": _c(1)}]}}
    wl = [{"name": "w", "operations": {"x": 1}, "rate_rps": 10}]
    with np.errstate(all="raise"):   # no 0/0 anywhere
        load = _load(_scen(ops, [_svc("a")], workloads=wl))
    assert load["a[*].cpu"] == pytest.approx(10 / 1000)
    with pytest.raises(ScenarioError, match=r"simulation\.closed: .*weight must be positive"):
        _scen(ops, [_svc("a")], workloads=wl, simulation={"closed": {"users": 2}})


# ------------------------------------------------------------------ predicted vs simulated

CPU_KINDS = ("cpu", "db_cpu", "db_replica_cpu", "cache_cpu")
HOLD_KINDS = ("workers", "db_pool")
TARGET_RHO = 0.45     # the busiest processor-sharing station of a random topology
DURATION_S = 30.0


@st.composite
def _step(draw: Any, names: list[str], depth: int) -> dict[str, Any]:
    step: dict[str, Any] = {"component": draw(st.sampled_from(names)),
                            "cpu": {"kind": "exponential",
                                    "mean_ms": draw(st.sampled_from([0.5, 1.0, 2.0]))}}
    if draw(st.booleans()):
        step["probability"] = draw(st.sampled_from([0.3, 0.6]))
    if draw(st.booleans()):
        step["db"] = {"kind": "exponential", "mean_ms": draw(st.sampled_from([0.5, 1.5]))}
        step["read"] = draw(st.booleans())
        if draw(st.booleans()):
            step["cache"] = "c"
    if depth == 0 and draw(st.booleans()):
        step["mode"] = "async"
    if depth < 2 and draw(st.booleans()):
        step["calls"] = [draw(_step(names, depth + 1))]
    return step


@st.composite
def _topology(draw: Any) -> dict[str, Any]:
    names = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    services = [{"name": n, "components": [n], "replicas": draw(st.integers(1, 2)),
                 "cores": draw(st.integers(1, 2)), "workers": 64, "db_pool": 32,
                 "database": "db"} for n in names]
    ops = {f"op{i}": {"weight": 0, "rate_rps": draw(st.sampled_from([1.0, 2.0, 3.0])),
                      "steps": draw(st.lists(_step(names, 0), min_size=1, max_size=2))}
           for i in range(draw(st.integers(1, 2)))}
    dep = {"name": "d", "kind": "microservices", "services": services,
           "databases": [{"name": "db", "cores": draw(st.integers(1, 2)),
                          "read_replicas": draw(st.integers(0, 2)),
                          "shards": draw(st.integers(1, 2))}],
           "caches": [{"name": "c", "hit_ratio": draw(st.sampled_from([0.0, 0.5, 0.9])),
                       "lookup": {"kind": "exponential", "mean_ms": 0.3}}]}
    raw = {"name": "random", "simulation": {"duration_s": DURATION_S, "warmup": 0},
           "population": {"registered_players": 1000, "peak_online": 10},
           "operations": ops, "deployments": [dep]}
    if draw(st.booleans()):
        raw["workloads"] = [{"name": "batch", "operations": {"op0": 1}, "users": 5,
                             "think_time": {"kind": "exponential", "mean_ms": 500}}]
    return raw


def _group(name: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", re.sub(r"replica\d+", "replica[*]", name))


@settings(max_examples=6, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: each example simulates
          suppress_health_check=[HealthCheck.too_slow])
@given(_topology())
def test_predicted_utilisation_matches_the_simulated_one(raw: dict[str, Any]) -> None:
    scen = parse_scenario(raw)
    busiest = max(o.utilisation for o in offered_load(scen) if o.kind in CPU_KINDS)
    for op in raw["operations"].values():  # scale the open rates to a stable load
        op["rate_rps"] *= TARGET_RHO / busiest
    scen = parse_scenario(raw)
    predicted = {(o.kind, o.station): o.utilisation for o in offered_load(scen)}
    topo = compile_topology(scen, scen.deployments[0])
    out = Engine(topo, np.random.default_rng(7)).run(
        plan_sources(scen, 1, np.random.SeedSequence(11)), DURATION_S)
    simulated: dict[tuple[str, str], list[float]] = {}
    for ser in out.stations:
        if ser.kind in CPU_KINDS + HOLD_KINDS:
            util = ser.busy[-1] / (ser.servers * DURATION_S)
            simulated.setdefault((ser.kind, _group(ser.name)), []).append(util)
    for key, utils in simulated.items():
        sim_u, pred = float(np.mean(utils)), predicted.get(key, 0.0)
        if key[0] in CPU_KINDS:   # work-conserving: the offered load is the utilisation
            assert sim_u == pytest.approx(pred, rel=0.12, abs=0.01), (key, raw)
        else:                     # holding without queueing: a lower bound
            assert sim_u >= 0.9 * pred - 0.01, (key, raw)


def test_a_closed_loops_saturation_says_it_is_the_bound() -> None:
    ops = {"x": {"weight": 1, "steps": [{"component": "a", "cpu": _c(10)}]}}
    scen = _scen(ops, [_svc("a")], simulation={"duration_s": 10, "closed": {"users": 5}})
    sat = saturation(scen, ["d"], stations=pd.DataFrame())
    cpu = next(o for o in sat["saturated_before_run"] if o["station"] == "a[*].cpu")
    assert cpu["offered_utilisation"] == pytest.approx(5 / 0.010 * 0.010)  # 5 users, no think
    assert "closed bound N/(Z+R0)" in saturation_lines({"saturation": sat})[0]
