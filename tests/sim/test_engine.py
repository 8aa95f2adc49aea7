"""Engine mechanics: processor sharing, pools, timeouts, queue limits, routes."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import simpy

from sim.engine.core import Engine, Pool, PSCpu
from sim.model.scenario import parse_scenario
from sim.model.topology import compile_topology

Chunk = namedtuple("Chunk", "t op player amount")


def _run_jobs(cores: int, max_jobs: int, jobs: list[tuple[float, float]]) -> list[float]:
    env = simpy.Environment()
    cpu = PSCpu(env, "cpu", "cpu", cores, max_jobs)
    done: list[float] = [0.0] * len(jobs)

    def job(i: int, start: float, work: float):
        yield env.timeout(start)
        yield cpu.serve(work)
        done[i] = env.now

    for i, (s, w) in enumerate(jobs):
        env.process(job(i, s, w))
    env.run()
    return done


def test_processor_sharing_one_core_two_equal_jobs_finish_together() -> None:
    assert _run_jobs(1, 10, [(0.0, 1.0), (0.0, 1.0)]) == pytest.approx([2.0, 2.0])


def test_processor_sharing_late_arrival_slows_the_first() -> None:
    # job A (work 2) alone for 1 s -> 1 left; B (work 0.5) arrives: both at rate 1/2.
    # B finishes after 1 s more (t=2); A then alone with 0.5 left -> t=2.5
    assert _run_jobs(1, 10, [(0.0, 2.0), (1.0, 0.5)]) == pytest.approx([2.5, 2.0])


def test_processor_sharing_with_more_cores_than_jobs_is_plain_delay() -> None:
    assert _run_jobs(4, 10, [(0.0, 1.0), (0.0, 1.0), (0.5, 1.0)]) == pytest.approx([1, 1, 1.5])
    # never-sharing fast path gives the same answer
    assert _run_jobs(4, 4, [(0.0, 1.0), (0.0, 1.0), (0.5, 1.0)]) == pytest.approx([1, 1, 1.5])


def test_processor_sharing_three_jobs_two_cores() -> None:
    # three jobs of work 1 on 2 cores: each at rate 2/3 -> all finish at 1.5
    assert _run_jobs(2, 10, [(0, 1.0)] * 3) == pytest.approx([1.5] * 3)


def test_pool_fifo_and_accounting() -> None:
    env = simpy.Environment()
    pool = Pool(env, "p", "workers", 1)
    order: list[int] = []

    def user(i: int):
        ev = pool.acquire()
        if ev is not None:
            yield ev
        order.append(i)
        yield env.timeout(1.0)
        pool.release()

    for i in range(3):
        env.process(user(i))
    env.run()
    assert order == [0, 1, 2]
    busy, queue, done = pool.snapshot()
    assert (busy, queue, done) == (pytest.approx(3.0), pytest.approx(3.0), 3)  # waits 1 + 2


def _scenario(**service) -> object:
    svc = {"name": "s", "components": ["x"], "workers": 1, "cores": 1} | service
    return parse_scenario({
        "name": "t",
        "demands": {"work": {"kind": "constant", "value_ms": 100}},
        "operations": {"job": {"weight": 1, "steps": [{"component": "x", "cpu": "work"}]}},
        "deployments": [{"name": "d", "kind": "monolith", "services": [svc]}],
    })


def _burst(n: int, at: float = 0.0) -> list[Chunk]:
    t = np.full(n, at)
    return [Chunk(t, np.zeros(n, np.int16), np.arange(n), np.zeros(n, np.int64))]


def test_queue_limit_rejects_with_error() -> None:
    scen = _scenario(queue_limit=2)
    out = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(0)).run_open(
        _burst(5), 10.0)
    assert len(out.t) == 5
    assert out.error.sum() == 2                 # 1 served at once, 2 queued, 2 rejected
    assert sorted(out.latency[~out.error]) == pytest.approx([0.1, 0.2, 0.3])


def test_db_pool_timeout_fails_request() -> None:
    scen = parse_scenario({
        "name": "t",
        "demands": {"q": {"kind": "constant", "value_ms": 1000}},
        "operations": {"job": {"weight": 1, "steps": [{"component": "x", "db": "q"}]}},
        "deployments": [{"name": "d", "kind": "monolith",
                         "services": [{"name": "s", "components": ["x"], "workers": 10,
                                       "cores": 1, "db_pool": 1, "database": "db",
                                       "db_pool_timeout_ms": 500}],
                         "databases": [{"name": "db", "cores": 4}]}],
    })
    out = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(0)).run_open(
        _burst(3), 10.0)
    assert int(out.error.sum()) == 2
    assert sorted(out.latency) == pytest.approx([0.5, 0.5, 1.0])


def test_remote_call_pays_two_hops_and_rpc_cpu() -> None:
    scen = parse_scenario({
        "name": "t",
        "demands": {"w": {"kind": "constant", "value_ms": 10}},
        "operations": {"job": {"weight": 1, "steps": [{"component": "b", "cpu": "w"}]}},
        "deployments": [{"name": "d", "kind": "microservices", "entry": "a",
                         "network_hop": {"kind": "constant", "value_ms": 1},
                         "rpc_cpu": {"kind": "constant", "value_ms": 2},
                         "services": [{"name": "a", "components": ["a"]},
                                      {"name": "b", "components": ["b"]}]}],
    })
    out = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(0)).run_open(
        _burst(1), 1.0)
    # caller rpc 2 + hop 1 + callee rpc 2 + work 10 + hop 1
    assert out.latency[0] == pytest.approx(0.016)


def test_async_step_does_not_delay_the_response() -> None:
    scen = parse_scenario({
        "name": "t",
        "demands": {"w": {"kind": "constant", "value_ms": 10},
                    "slow": {"kind": "constant", "value_ms": 500}},
        "operations": {"job": {"weight": 1, "steps": [
            {"component": "a", "cpu": "w"}, {"component": "b", "mode": "async", "cpu": "slow"}]}},
        "deployments": [{"name": "d", "kind": "hybrid",
                         "broker": {"publish": {"kind": "constant", "value_ms": 1}},
                         "rpc_cpu": {"kind": "constant", "value_ms": 0},
                         "services": [{"name": "a", "components": ["a"], "cores": 4},
                                      {"name": "b", "components": ["b"], "workers": 1}]}],
    })
    eng = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(0))
    out = eng.run_open(_burst(3), 5.0)
    assert out.latency == pytest.approx([0.011] * 3)
    broker = next(s for s in out.stations if s.kind == "broker")
    assert broker.completions[-1] == 3          # all three consumed, one at a time
    assert broker.queue[-1] > 0                 # two of them waited in the broker


def test_hot_account_lock_serialises_writers() -> None:
    scen = parse_scenario({
        "name": "t",
        "demands": {"w": {"kind": "constant", "value_ms": 10}},
        "operations": {"spin": {"weight": 1, "steps": [
            {"component": "x", "db": "w", "lock": "jackpot"}]}},
        "deployments": [{"name": "d", "kind": "monolith",
                         "services": [{"name": "s", "components": ["x"], "workers": 50,
                                       "db_pool": 50, "database": "db"}],
                         "databases": [{"name": "db", "cores": 64}],
                         "hot_accounts": {"jackpot": {"sub_accounts": 1}}}],
    })
    out = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(0)).run_open(
        _burst(5), 5.0)
    assert sorted(out.latency) == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])


def test_pool_and_ps_waits_are_counted_in_histograms() -> None:
    from sim.engine.waits import WaitHistogram, wait_percentiles_ms

    env = simpy.Environment()
    pool = Pool(env, "p", "workers", 1)
    pool.waits = WaitHistogram(10.0)

    def user():
        ev = pool.acquire()
        if ev is not None:
            yield ev
        yield env.timeout(1.0)
        pool.release()

    for _ in range(3):
        env.process(user())
    env.run()
    # waits 0, 1 and 2 s: p50 is 1 s, p99 2 s (within the 2% buckets)
    p50, p99 = wait_percentiles_ms(pool.waits.counts(), 0)
    assert p50 == pytest.approx(1000.0, rel=0.02)
    assert p99 == pytest.approx(2000.0, rel=0.02)

    env = simpy.Environment()
    cpu = PSCpu(env, "cpu", "cpu", 1, 10)
    cpu.waits = WaitHistogram(10.0)

    def job():
        yield cpu.serve(1.0)

    env.process(job())
    env.process(job())
    env.run()
    # two equal jobs share one core: each finishes at 2 s, having lost 1 s to sharing
    assert wait_percentiles_ms(cpu.waits.counts(), 0) == pytest.approx([1000.0, 1000.0],
                                                                      rel=0.02)


def test_every_queue_is_bounded_and_says_what_happens_when_full() -> None:
    from sim.engine.stations import DEFAULT_QUEUE_LIMIT, REJECTED, Backlog

    env = simpy.Environment()
    pool = Pool(env, "p", "workers", 1)
    assert pool.limit == DEFAULT_QUEUE_LIMIT          # no queue_limit: the named default
    small = Pool(env, "q", "workers", 1, limit=1)
    assert small.acquire() is None                    # served at once
    assert small.acquire() not in (None, REJECTED)    # waits
    assert small.acquire() is REJECTED                # queue full: refused, not queued
    assert len(small.waiting) == 1
    broker = Backlog(env, "broker", limit=2)
    assert broker.put() and broker.put()
    assert not broker.put()                           # full: the publish is refused
    assert broker.backlog == 2


def test_a_full_broker_fails_the_publishing_request(monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.engine.core as core

    scen = parse_scenario({
        "name": "t",
        "demands": {"w": {"kind": "constant", "value_ms": 1},
                    "slow": {"kind": "constant", "value_ms": 500}},
        "operations": {"job": {"weight": 1, "steps": [
            {"component": "a", "cpu": "w"}, {"component": "b", "mode": "async", "cpu": "slow"}]}},
        "deployments": [{"name": "d", "kind": "hybrid",
                         "services": [{"name": "a", "components": ["a"], "cores": 4},
                                      {"name": "b", "components": ["b"], "workers": 1}]}],
    })
    small = core.Backlog
    monkeypatch.setattr(core, "Backlog", lambda env, name: small(env, name, limit=2))
    out = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(0)).run_open(
        _burst(4), 5.0)
    assert int(out.error.sum()) == 2                  # two accepted, two refused by the broker
