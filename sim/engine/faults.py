"""Faults injected into a run: one small SimPy process per fault, acting on the stations and on
the request path's hooks (``sim.engine.path``), never on a request directly.

* crash: the replicas die (``down``, ``epoch`` bumped: queued requests fail at once, in-flight
  ones fail as the client sees the connection drop); the load balancer keeps sending to them
  (failing at once) until the ``fall``-th failed health check (checks every ``interval`` s
  from t = 0) takes them out; ``down_s`` later they restart and serve after ``boot_s``
  (``cold_factor`` times slower for ``warmup_s``), and are back behind the load balancer
  after ``rise`` good checks;
* hang: the replicas' worker pools serve nobody for the window (capacity 0), requests queue;
* slowdown: a service's cores, a database's cores or an external wait ``factor`` times slower;
* network: calls between two services (both ways) pay ``latency`` per message and lose one
  with probability ``loss`` (request or answer: 1 - (1 - loss)^2 per call);
* db_failover: the database's primaries refuse work for the window (work in flight fails);
  with asynchronous replication the writes committed within the lag before it are lost;
* broker_outage: publishers keep up to ``backlog`` messages (then wait), consumers wait for
  the broker to come back;
* reconnect: the players whose requests failed during the window send ``operation`` at a
  uniform time within ``over_s`` after it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from typing import Any

import simpy
from simpy.events import Event

from sim.engine.output import FaultLog
from sim.engine.path import RequestPath
from sim.engine.sources import KEY_STRIDE
from sim.engine.stations import PSCpu, Replica, Stations
from sim.model.faults import FaultSpec
from sim.model.topology import Topology

RECONNECT_KEY0 = 1_000 * KEY_STRIDE
"""Request keys of reconnect logins (fault i: from ``RECONNECT_KEY0 + i * KEY_STRIDE``)."""


def start_faults(env: simpy.Environment, topo: Topology, st: Stations, path: RequestPath,
                 duration: float) -> list[FaultLog]:
    """Start every fault of ``topo`` (and its reconnect storm); their logs, filled as the run
    goes."""
    logs: list[FaultLog] = []
    out: dict[int, set[int]] = {}   # service -> indices of replicas the load balancer dropped
    for i, spec in enumerate(topo.faults):
        log = FaultLog(spec.name)
        logs.append(log)
        if spec.inert is not None or spec.start_s >= duration:
            continue
        if spec.kind == "crash":
            env.process(_crash(env, topo, st, path, spec, log, out))
        elif spec.kind == "hang":
            env.process(_hang(env, st, spec))
        elif spec.kind == "slowdown":
            env.process(_slowdown(env, st, path, spec))
        elif spec.kind == "network":
            env.process(_network(env, path, spec))
        elif spec.kind == "db_failover":
            env.process(_failover(env, topo, st, spec, log))
        elif spec.kind == "broker_outage":
            env.process(_broker_outage(env, st, spec))
        else:
            raise AssertionError(f"unknown fault kind {spec.kind}")
        if spec.reconnect is not None:
            env.process(_reconnect(env, path, spec, RECONNECT_KEY0 + i * KEY_STRIDE))
    return logs


def _at(env: simpy.Environment, t: float) -> Event:
    return env.timeout(max(0.0, t - env.now))


def _crash(env: simpy.Environment, topo: Topology, st: Stations, path: RequestPath,
           spec: FaultSpec, log: FaultLog, out: dict[int, set[int]]) -> Generator[Event, Any, None]:
    assert spec.service is not None
    s = spec.service
    svc = topo.services[s]
    reps = st.replicas[s]
    yield _at(env, spec.start_s)
    dead = [reps[i] for i in spec.replicas]
    now = env.now
    for r in dead:
        r.down = True
        r.epoch += 1
        r.crashed_at = now
        r.workers.fail_waiting()
    iv = svc.health_interval_s
    detect = (math.floor(now / iv) + svc.health_fall) * iv  # the fall-th check after the crash
    serving = spec.start_s + spec.down_s + spec.boot_s
    dropped = out.setdefault(s, set())
    removed = detect < serving
    if removed:
        yield _at(env, detect)
        dropped.update(spec.replicas)
        path.targets[s] = [r for i, r in enumerate(reps) if i not in dropped]
        log.detected_s = env.now
    yield _at(env, serving)
    for r in dead:
        r.down = False
        r.cpu.slow *= spec.cold_factor
    if spec.cold_factor != 1.0 and spec.warmup_s > 0:
        env.process(_warm(env, [r.cpu for r in dead], spec.cold_factor, spec.warmup_s))
    if removed:
        yield _at(env, (math.floor(env.now / iv) + svc.health_rise) * iv)
        dropped.difference_update(spec.replicas)
        path.targets[s] = [r for i, r in enumerate(reps) if i not in dropped]


def _unslow(cpus: list[PSCpu], factor: float) -> None:
    for c in cpus:
        c.slow /= factor
        if abs(c.slow - 1.0) < 1e-12:
            c.slow = 1.0  # back to exact: no fault left on it


def _warm(env: simpy.Environment, cpus: list[PSCpu], factor: float,
          warmup_s: float) -> Generator[Event, Any, None]:
    yield env.timeout(warmup_s)
    _unslow(cpus, factor)


def _hang(env: simpy.Environment, st: Stations, spec: FaultSpec) -> Generator[Event, Any, None]:
    assert spec.service is not None
    reps: list[Replica] = [st.replicas[spec.service][i] for i in spec.replicas]
    yield _at(env, spec.start_s)
    saved = [r.workers.capacity for r in reps]
    for r in reps:
        r.workers.set_capacity(0)
    yield env.timeout(spec.down_s)
    for r, c in zip(reps, saved, strict=True):
        r.workers.set_capacity(c)


def _slowdown(env: simpy.Environment, st: Stations, path: RequestPath,
              spec: FaultSpec) -> Generator[Event, Any, None]:
    cpus: list[PSCpu] = []
    if spec.service is not None:
        cpus = [r.cpu for r in st.replicas[spec.service]]
    elif spec.database is not None:
        cpus = [c for sh in st.shards[spec.database] for c in (sh.cpu, *sh.read_replicas)]
    yield _at(env, spec.start_s)
    for c in cpus:
        c.slow *= spec.factor
    ext = spec.external
    if ext is not None:
        path.external_slow[ext] = path.external_slow.get(ext, 1.0) * spec.factor
    yield env.timeout(spec.down_s)
    _unslow(cpus, spec.factor)
    if ext is not None:
        left = path.external_slow[ext] / spec.factor
        if abs(left - 1.0) < 1e-12:
            del path.external_slow[ext]
        else:
            path.external_slow[ext] = left


def _network(env: simpy.Environment, path: RequestPath,
             spec: FaultSpec) -> Generator[Event, Any, None]:
    assert spec.source is not None and spec.service is not None
    keys = {(spec.source, spec.service), (spec.service, spec.source)}
    yield _at(env, spec.start_s)
    for k in keys:
        path.links[k] = (spec.latency_s, spec.loss, spec.lost_wait_s)
    yield env.timeout(spec.down_s)
    for k in keys:
        path.links.pop(k, None)


def _failover(env: simpy.Environment, topo: Topology, st: Stations, spec: FaultSpec,
              log: FaultLog) -> Generator[Event, Any, None]:
    assert spec.database is not None
    db = topo.databases[spec.database]
    shards = st.shards[spec.database]
    lag = db.replication_lag_s if db.sync_s == 0.0 else 0.0
    if lag > 0:
        for sh in shards:
            sh.commits = deque()
        env.process(_trim_commits(env, shards, lag, spec.start_s))
    yield _at(env, spec.start_s)
    now = env.now
    lost = 0
    for sh in shards:
        if sh.commits is not None:
            lost += sum(1 for t in sh.commits if t >= now - lag)
            sh.commits = None  # the log is only needed up to the failure
        sh.down = True
        sh.epoch += 1
    log.lost_transactions = lost * topo.reduce_factor
    log.detected_s = now  # the database's own failure detector: the window starts with it
    yield env.timeout(spec.down_s)
    for sh in shards:
        sh.down = False


def _trim_commits(env: simpy.Environment, shards: list[Any], lag: float,
                  until: float) -> Generator[Event, Any, None]:
    """Keep each shard's commit log to the last ``lag`` seconds (bounded: 2 x lag x rate)."""
    while env.now < until:
        yield env.timeout(min(lag, max(until - env.now, 1e-9)))
        cut = env.now - lag
        for sh in shards:
            log = sh.commits
            while log and log[0] < cut:
                log.popleft()


def _broker_outage(env: simpy.Environment, st: Stations,
                   spec: FaultSpec) -> Generator[Event, Any, None]:
    broker = st.broker
    yield _at(env, spec.start_s)
    broker.down = env.event()
    broker.hold_limit = spec.backlog
    broker.held = 0
    yield env.timeout(spec.down_s)
    back, broker.down = broker.down, None
    broker.held = 0
    back.succeed()


def _reconnect(env: simpy.Environment, path: RequestPath, spec: FaultSpec,
               key0: int) -> Generator[Event, Any, None]:
    rc = spec.reconnect
    assert rc is not None
    yield _at(env, spec.start_s)
    if path.failed_players is None:
        path.failed_players = set()
    yield _at(env, spec.end_s)
    players = sorted(path.failed_players)
    path.failed_players = None
    if rc.count:  # a stated share of the online players instead
        players = [rc.stride * path.pyrng.randrange(rc.space) for _ in range(rc.count)]
    times = sorted(path.pyrng.uniform(0.0, rc.over_s) for _ in players)
    start = env.now
    for key, (t, p) in enumerate(zip(times, players, strict=True)):
        yield _at(env, start + t)
        env.process(path.walk(rc.operation, p, key0 + key))
