"""The scenario language's call graphs, branches, caches, read replicas, explicit rates and
mixed workloads: validation of the files, mechanics in the engine, and a hand-written SimPy
model of nested holding."""

from __future__ import annotations

import copy
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
import simpy

from sim.analysis.output_analysis import confidence_interval
from sim.engine.core import Engine
from sim.engine.sources import plan_sources
from sim.model.scenario import MAX_CALL_DEPTH, ScenarioError, parse_scenario
from sim.model.topology import compile_topology, reduce_factor

Chunk = namedtuple("Chunk", "t op player amount")


def _const(ms: float) -> dict[str, Any]:
    return {"kind": "constant", "value_ms": ms}


def _burst(n: int) -> list[Chunk]:
    return [Chunk(np.zeros(n), np.zeros(n, np.int16), np.arange(n), np.zeros(n, np.int64))]


def _raw(steps: list[dict[str, Any]], services: list[dict[str, Any]],
         kind: str = "microservices", **dep: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "operations": {"job": {"weight": 1, "steps": steps}},
        "deployments": [{"name": "d", "kind": kind, "network_hop": _const(1),
                         "rpc_cpu": _const(0), "services": services} | dep],
    }


def _run(raw: dict[str, Any], n: int, duration: float = 10.0) -> Any:
    scen = parse_scenario(raw)
    eng = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(0))
    return eng.run_open(_burst(n), duration)


# ------------------------------------------------------------------ validation


def _chain(depth: int) -> dict[str, Any]:
    step: dict[str, Any] = {"component": "a", "cpu": _const(1)}
    for _ in range(depth):
        step = {"component": "a", "cpu": _const(1), "calls": [step]}
    return step


def test_call_depth_is_bounded_and_the_error_names_the_step() -> None:
    svc = [{"name": "a", "components": ["a"]}]
    parse_scenario(_raw([_chain(MAX_CALL_DEPTH)], svc))
    with pytest.raises(ScenarioError, match=r"operations\.job\.steps\[0\](\.calls\[0\])+: calls "
                                            r"nested deeper than 8"):
        parse_scenario(_raw([_chain(MAX_CALL_DEPTH + 1)], svc))


@pytest.mark.parametrize(("patch", "field"), [
    ({"probability": 0}, "probability"),
    ({"probability": 1.5}, "probability"),
    ({"probability": float("nan")}, "probability"),
    ({"cache": "nope", "db": _const(1)}, "cache 'nope'"),
    ({"read": True}, "a read is database work"),
])
def test_bad_step_fields_are_refused(patch: dict[str, Any], field: str) -> None:
    raw = _raw([{"component": "a", "cpu": _const(1)} | patch],
               [{"name": "a", "components": ["a"], "db_pool": 1, "database": "db"}],
               databases=[{"name": "db"}])
    with pytest.raises(ScenarioError, match=field):
        parse_scenario(raw)


@pytest.mark.parametrize("bad", [
    {"rate_rps": float("inf")}, {"rate_rps": 0}, {"rate_rps": 1e12},
    {"rate_table": [{"t_s": 10, "rps": 1}, {"t_s": 5, "rps": 2}]},
    {"rate_table": [{"t_s": 0, "rps": float("inf")}]},
    {"users": 5, "rate_rps": 3}, {},
])
def test_bad_workloads_are_refused(bad: dict[str, Any]) -> None:
    raw = _raw([{"component": "a", "cpu": _const(1)}], [{"name": "a", "components": ["a"]}])
    raw["workloads"] = [{"name": "w", "operations": {"job": 1}} | bad]
    with pytest.raises(ScenarioError, match=r"workloads\[0\]"):
        parse_scenario(raw)


def test_cache_and_replica_fields_have_finite_ranges() -> None:
    raw = _raw([{"component": "a", "cpu": _const(1)}], [{"name": "a", "components": ["a"]}],
               caches=[{"name": "c", "hit_ratio": 1.2, "lookup": _const(1)}],
               databases=[{"name": "db", "read_replicas": 1000,
                           "replication_lag_ms": float("inf")}])
    with pytest.raises(ScenarioError) as err:
        parse_scenario(raw)
    msg = str(err.value)
    assert "caches[0].hit_ratio" in msg
    assert "read_replicas" in msg and "replication_lag_ms" in msg


# ------------------------------------------------------------------ mechanics


def test_nested_call_holds_every_callers_worker() -> None:
    # a (1 worker) -> b -> c: a's worker is held for the whole chain, so the second request
    # waits for all of it: 1 + (hop 1 + 2 + (hop 1 + 3 + hop 1) + hop 1) = 10 ms each
    steps = [{"component": "a", "cpu": _const(1), "calls": [
        {"component": "b", "cpu": _const(2), "calls": [{"component": "c", "cpu": _const(3)}]}]}]
    svcs = [{"name": n, "components": [n], "workers": 1 if n == "a" else 10} for n in "abc"]
    out = _run(_raw(steps, svcs), 2)
    assert sorted(out.latency) == pytest.approx([0.010, 0.020])


def test_nested_calls_in_a_monolith_stay_on_the_worker() -> None:
    steps = [{"component": "a", "cpu": _const(1), "calls": [
        {"component": "b", "cpu": _const(2), "calls": [{"component": "c", "cpu": _const(3)}]}]}]
    svcs = [{"name": "app", "components": ["a", "b", "c"], "workers": 1, "cores": 1}]
    out = _run(_raw(steps, svcs, kind="monolith"), 2)
    assert sorted(out.latency) == pytest.approx([0.006, 0.012])  # no hops, one worker


def test_branch_is_taken_with_its_probability() -> None:
    steps = [{"component": "a", "cpu": _const(1)},
             {"component": "a", "external": _const(100), "probability": 0.25}]
    svcs = [{"name": "a", "components": ["a"], "workers": 10000, "cores": 1024}]  # MAX_CORES
    out = _run(_raw(steps, svcs, kind="monolith"), 4000)
    taken = float(np.mean(out.latency > 0.05))
    assert abs(taken - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 4000)


def test_cache_hit_skips_the_database_and_reads_go_to_replicas() -> None:
    steps = [{"component": "a", "db": _const(10), "cache": "c", "read": True}]
    svcs = [{"name": "a", "components": ["a"], "workers": 10000, "cores": 1024,
             "db_pool": 10000, "database": "db"}]
    raw = _raw(steps, svcs, kind="monolith",
               databases=[{"name": "db", "cores": 1024, "max_connections": 10000,
                           "read_replicas": 2, "replication_lag_ms": 20}],
               caches=[{"name": "c", "hit_ratio": 0.9, "lookup": _const(1), "cores": 1024}])
    out = _run(raw, 1000)  # fewer than the cores: no sharing, exact times
    miss = float(np.mean(out.latency > 0.005))
    assert abs(miss - 0.1) < 4 * np.sqrt(0.09 / 1000)
    assert set(np.round(out.latency, 6)) == {0.001, 0.011}
    done = {s.name: s.completions[-1] for s in out.stations}
    assert done["db[0].cpu"] == 0                               # the primary saw no read
    assert done["db[0].replica0.cpu"] + done["db[0].replica1.cpu"] == round(miss * 1000)
    assert done["cache:c[0].cpu"] == 1000


def test_explicit_rates_and_closed_workload_run_together() -> None:
    raw = _raw([{"component": "a", "cpu": _const(1)}], [{"name": "a", "components": ["a"]}],
               kind="monolith")
    raw["operations"]["report"] = {"weight": 0, "steps": [{"component": "a", "cpu": _const(2)}]}
    raw["operations"]["job"]["weight"] = 0
    raw["operations"]["job"]["rate_rps"] = 50
    raw["workloads"] = [{"name": "batch", "operations": {"report": 1}, "users": 3,
                         "think_time": _const(98)}]
    raw["simulation"] = {"duration_s": 40, "seed": 3}
    raw["population"] = {"registered_players": 1000, "peak_online": 10}
    scen = parse_scenario(raw)
    plan = plan_sources(scen, 1, np.random.SeedSequence(1))
    assert len(plan.open) == 1 and len(plan.closed) == 1   # population off (weights 0)
    out = Engine(compile_topology(scen, scen.deployments[0]),
                 np.random.default_rng(0)).run(plan, 40.0)
    jobs, reports = int((out.op == 0).sum()), int((out.op == 1).sum())
    assert abs(jobs - 2000) < 4 * np.sqrt(2000)            # Poisson at 50/s over 40 s
    assert reports == pytest.approx(3 * 40 / 0.1, rel=0.02)  # 3 users, 100 ms cycle


def test_same_arrivals_for_every_deployment_and_workload_streams_are_independent() -> None:
    raw = _raw([{"component": "a", "cpu": _const(1)}], [{"name": "a", "components": ["a"]}])
    raw["workloads"] = [{"name": "w", "operations": {"job": 1}, "rate_rps": 20}]
    raw["simulation"] = {"duration_s": 20}
    scen = parse_scenario(raw)
    seed = np.random.SeedSequence(5)
    a = [np.concatenate([c.t for c in s]) for s in plan_sources(scen, 1, seed).open]
    b = [np.concatenate([c.t for c in s]) for s in plan_sources(scen, 1, seed).open]
    assert len(a) == 2
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][:50], a[1][:50])


def test_cache_shards_count_in_the_reduce_factor() -> None:
    raw = _raw([{"component": "a", "cpu": _const(1)}],
               [{"name": "a", "components": ["a"], "replicas": 4}],
               caches=[{"name": "c", "hit_ratio": 0.5, "lookup": _const(1), "shards": 2}])
    raw["simulation"] = {"reduce": True}
    scen = parse_scenario(raw)
    assert reduce_factor(scen) == 2
    assert compile_topology(scen, scen.deployments[0], 2).caches[0].shards == 1


# ------------------------------------------------------------------ hand-written SimPy


def _hand_written_nested(lam: float, ms: tuple[float, float], workers: tuple[int, int],
                         hop: float, n: int, seed: int) -> float:
    """A minimal SimPy model: a's worker held while b (its own workers) serves the call."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / lam, n).tolist()
    xa = rng.exponential(ms[0] / 1000, n).tolist()
    xb = rng.exponential(ms[1] / 1000, n).tolist()
    env = simpy.Environment()
    a, b = simpy.Resource(env, workers[0]), simpy.Resource(env, workers[1])
    resp: list[float] = []

    def customer(i: int):
        t0 = env.now
        with a.request() as ra:
            yield ra
            yield env.timeout(xa[i] + hop)
            with b.request() as rb:
                yield rb
                yield env.timeout(xb[i])
            yield env.timeout(hop)
        resp.append(env.now - t0)

    def source():
        for i, g in enumerate(gaps):
            yield env.timeout(g)
            env.process(customer(i))

    env.process(source())
    env.run()
    return float(np.mean(resp[n // 10:]))


@pytest.mark.slow
def test_nested_holding_matches_a_hand_written_simpy_model() -> None:
    lam, ms, workers, hop_ms, n = 300.0, (4.0, 5.0), (3, 2), 0.5, 20_000
    steps = [{"component": "a", "cpu": {"kind": "exponential", "mean_ms": ms[0]}, "calls": [
        {"component": "b", "cpu": {"kind": "exponential", "mean_ms": ms[1]}}]}]
    svcs = [{"name": "a", "components": ["a"], "workers": workers[0], "cores": workers[0]},
            {"name": "b", "components": ["b"], "workers": workers[1], "cores": workers[1]}]
    raw = _raw(steps, svcs, kind="monolith", network_hop=_const(hop_ms))
    raw["deployments"][0]["kind"] = "microservices"
    scen = parse_scenario(copy.deepcopy(raw))
    engine, hand = [], []
    for rep in range(5):
        rng = np.random.default_rng(100 + rep)
        t = np.cumsum(rng.exponential(1 / lam, n))
        chunk = Chunk(t, np.zeros(n, np.int16), np.arange(n), np.zeros(n, np.int64))
        out = Engine(compile_topology(scen, scen.deployments[0]),
                     np.random.default_rng(200 + rep)).run_open([chunk], float(t[-1]) + 5)
        engine.append(float(np.mean(out.latency[out.t >= t[n // 10]])))
        hand.append(_hand_written_nested(lam, ms, workers, hop_ms / 1000, n, 300 + rep))
    m_e, h_e = confidence_interval(np.asarray(engine))
    m_h, h_h = confidence_interval(np.asarray(hand))
    assert abs(m_e - m_h) / m_h <= 0.03 or abs(m_e - m_h) <= h_e + h_h, (m_e, h_e, m_h, h_h)


def test_results_state_the_replication_lag_and_the_workloads() -> None:
    from sim.runner import run

    raw = _raw([{"component": "a", "db": _const(1), "read": True}],
               [{"name": "a", "components": ["a"], "db_pool": 4, "database": "db"}],
               kind="monolith", databases=[{"name": "db", "read_replicas": 2,
                                            "replication_lag_ms": 40}])
    raw["workloads"] = [{"name": "batch", "operations": {"job": 1}, "users": 2}]
    raw["simulation"] = {"duration_s": 5, "replications": 2, "warmup": 0}
    raw["population"] = {"registered_players": 1000, "peak_online": 100}
    res = run(parse_scenario(raw), jobs=1)
    notes = " ".join(res.meta["notes"])
    assert "2 read replica(s)" in notes and "40 ms" in notes
    assert "workload batch: 2 closed users" in notes
    kinds = set(res.stations["kind"])
    assert "db_replica_cpu" in kinds
