"""The request's path: its route's steps and calls, walked through the stations.

A request enters its route's entry service (a worker is taken from one replica chosen by the
deployment's load-balancing policy), pays the gateway CPU if that service hosts the gateway,
then takes its steps in order. A step runs on the service hosting its component:

* on the caller's replica when it is the same service (same worker, no network);
* else as a *call*: caller's RPC CPU, a network hop, a worker of the callee (from one of its
  replicas), the callee's RPC CPU, the step's work, a hop back; the caller's worker is held
  all the while;
* ``async`` steps go through the broker: the request does not wait, a consumer worker of the
  hosting service takes the message later.

A step may be a branch (taken with its ``probability``) and may make nested ``calls``, taken
the same way from the step's own service after its work, each holding the step's worker (and
so every caller's up the chain) until it returns. A step's work is its CPU (processor sharing
on the replica's cores), its external wait, and its database time (a cache lookup first if
the step names a cache, the database only on a miss; a pooled connection held, the shard's
cores, or a read replica's for a read). A step writing a contended row (the player's, a hot
account's) runs its database work as a transaction of :mod:`sim.engine.contention`: row locks
(pessimistic) or a version check at commit with retries (optimistic).

Policies today: the service's ``queue_limit`` (503 when the worker queue is full) and the
connection pool's timeout (the request fails). Every draw is prepared once per step
(:class:`PreparedStep`), keyed by the request's arrival index.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy
from simpy.events import Event

from sim.engine.contention import Contention
from sim.engine.sampling import Draw, DrawFactory
from sim.engine.stations import REJECTED, Pool, PSCpu, Replica, Shard, Stations
from sim.model.topology import ServiceSpec, StepSpec, Topology

Record = Callable[[float, int, float, bool], None]


@dataclass(frozen=True)
class PreparedStep:
    """A step with its service and its draws resolved once."""

    spec: StepSpec
    service: int
    svc: ServiceSpec
    is_async: bool
    cpu: Draw | None
    external: Draw | None
    db: Draw | None
    lock: int | None
    probability: float             # < 1: a branch, decided by ``branch``
    branch: Draw | None
    read: bool
    cache: int | None              # index of the cache looked up before the database work
    hit_ratio: float
    lookup: Draw | None
    hit: Draw | None
    calls: tuple[PreparedStep, ...]
    op: int = -1                   # the operation whose route holds the step
    contended: bool = False        # rows locked or version-checked (sim/engine/contention.py)


@dataclass(frozen=True)
class PreparedRoute:
    """A route with its steps prepared."""

    op: int
    entry: int
    entry_svc: ServiceSpec
    gateway_cpu: Draw | None
    steps: tuple[PreparedStep, ...]


def prepare_routes(topo: Topology, draws: DrawFactory) -> list[PreparedRoute]:
    """Resolve every route's draws once (never per request)."""
    out = []
    for oi, route in enumerate(topo.routes):
        steps = tuple(_prepare_step(topo, draws, f"{route.operation}/{i}", st, oi)
                      for i, st in enumerate(route.steps))
        gw = (draws.demand(route.gateway_cpu, f"{route.operation}/gateway:cpu")
              if route.gateway_cpu is not None else None)
        out.append(PreparedRoute(oi, route.entry, topo.services[route.entry], gw, steps))
    return out


def _prepare_step(topo: Topology, draws: DrawFactory, site: str,
                  st: StepSpec, op: int) -> PreparedStep:
    def d(dist: Any, what: str) -> Draw | None:
        return draws.demand(dist, f"{site}:{what}") if dist is not None else None

    cache = topo.caches[st.cache] if st.cache is not None else None
    return PreparedStep(
        spec=st,
        service=st.service,
        svc=topo.services[st.service],
        is_async=st.is_async,
        cpu=d(st.cpu, "cpu"),
        external=d(st.external, "external"),
        db=d(st.db, "db"),
        lock=st.lock,
        probability=st.probability,
        branch=draws.uniform(f"{site}:branch") if st.probability < 1.0 else None,
        read=st.read,
        cache=st.cache,
        hit_ratio=cache.hit_ratio if cache is not None else 0.0,
        lookup=d(cache.lookup, "cache") if cache is not None else None,
        hit=draws.uniform(f"{site}:hit") if cache is not None else None,
        calls=tuple(_prepare_step(topo, draws, f"{site}.{i}", c, op)
                    for i, c in enumerate(st.calls)),
        op=op,
        contended=st.contended,
    )


class RequestPath:
    """Walks requests along their prepared routes through a deployment's stations."""

    def __init__(self, env: simpy.Environment, topo: Topology, stations: Stations,
                 draws: DrawFactory, pyrng: random.Random, record: Record,
                 contention: Contention | None = None):
        self.env = env
        self.topo = topo
        self.replicas = stations.replicas
        self.shards = stations.shards
        self.locks = stations.locks
        self.caches = stations.caches
        self.broker = stations.broker
        self.pyrng = pyrng
        self.record = record
        self.contention = contention
        self.routes = prepare_routes(topo, draws)
        self._hop = draws.demand(topo.network_hop, "network_hop")
        self._rpc = draws.demand(topo.rpc_cpu, "rpc_cpu")
        self._publish = draws.demand(topo.publish, "publish")
        self._rr = [0] * len(topo.services)
        self._lb = topo.load_balancing
        self._k = topo.reduce_factor

    # ------------------------------------------------------------------ choices

    def pick(self, service: int) -> Replica:
        """A replica of ``service`` by the deployment's load-balancing policy."""
        reps = self.replicas[service]
        if len(reps) == 1:
            return reps[0]
        lb = self._lb
        if lb == "round_robin":
            i = self._rr[service]
            self._rr[service] = (i + 1) % len(reps)
            return reps[i]
        if lb == "least_outstanding":
            return min(reps, key=lambda r: r.workers.busy + len(r.workers.waiting))
        return reps[self.pyrng.randrange(len(reps))]

    def _shard(self, database: int, player: int) -> Shard:
        shards = self.shards[database]
        return shards[(player // self._k) % len(shards)]

    # ------------------------------------------------------------------ processes

    def request(self, op: int, player: int, key: int) -> Generator[Event, Any, None]:
        """One client request: enter, walk the route, record the response time."""
        env = self.env
        t0 = env.now
        route = self.routes[op]
        rep = self.pick(route.entry)
        w = rep.workers
        ev = w.acquire()
        if ev is not None:
            if ev is REJECTED:
                self.record(t0, op, 0.0, True)
                return
            yield ev
        if route.gateway_cpu is not None:
            yield rep.cpu.serve(route.gateway_cpu(key))
        ok = yield from self._steps(rep, route.entry, route.steps, player, key)
        w.release()
        self.record(t0, op, env.now - t0, not ok)

    def _steps(self, rep: Replica, here: int, steps: tuple[PreparedStep, ...], player: int,
               key: int) -> Generator[Event, Any, bool]:
        """Take ``steps`` in order from replica ``rep`` of service ``here``; ``False`` as soon
        as one fails."""
        for step in steps:
            if step.branch is not None and step.branch(key) >= step.probability:
                continue  # branch not taken
            if step.is_async:
                if not (yield from self._publish_step(rep, here, step, player, key)):
                    return False
                continue
            if step.service == here:
                ok = yield from self._work(rep, step, player, key)
            else:
                ok = yield from self._call(rep, step, player, key)
            if not ok:
                return False
        return True

    def _publish_step(self, rep: Replica, here: int, step: PreparedStep, player: int,
                      key: int) -> Generator[Event, Any, bool]:
        """Hand an async step to the broker; ``False`` if the broker refused it (full)."""
        if not self.broker.put():  # full: refused
            return False
        if step.service == here:
            self.env.process(self._consume(step, player, key, rep))
        else:
            yield rep.cpu.serve(self._rpc(key))
            yield self.env.timeout(self._publish(key))
            self.env.process(self._consume(step, player, key, None))
        return True

    def _work(self, rep: Replica, step: PreparedStep, player: int,
              key: int) -> Generator[Event, Any, bool]:
        """CPU, external wait and database work of a step on replica ``rep``."""
        env = self.env
        if step.cpu is not None:
            yield rep.cpu.serve(step.cpu(key))
        if step.external is not None:
            yield env.timeout(step.external(key))
        if step.db is not None and not (
                step.cache is not None and (yield from self._cache_hit(step, player, key))):
            svc = step.svc
            pool = rep.db_pool
            assert pool is not None and svc.database is not None
            ev = pool.acquire()  # free at once (the common case): no generator entered
            if ev is not None and not (yield from self._wait_connection(pool, ev, svc)):
                return False
            if step.contended:  # written rows locked or version-checked, retried if lost
                assert self.contention is not None
                if not (yield from self.contention.transact(step, key, player, pool,
                                                            self._connect, self._db_cpu)):
                    return False
            else:
                yield self._db_cpu(step, player).serve(step.db(key))
                pool.release()
        if step.calls:
            return (yield from self._steps(rep, step.service, step.calls, player, key))
        return True

    def _connect(self, pool: Pool, svc: ServiceSpec) -> Generator[Event, Any, bool]:
        """Take a connection of ``pool``; ``False`` when the pool's timeout passed first."""
        ev = pool.acquire()
        if ev is None:
            return True
        return (yield from self._wait_connection(pool, ev, svc))

    def _wait_connection(self, pool: Pool, ev: Event | Any,
                         svc: ServiceSpec) -> Generator[Event, Any, bool]:
        """Wait for the connection ``ev`` of ``pool`` promised; ``False`` (and the request
        withdrawn) when the pool's timeout passes first."""
        # bounded by construction: every waiter holds one of the service's workers
        assert ev is not REJECTED, f"{pool.name}: connection queue over its bound"
        timeout = svc.pool_timeout_s
        if timeout is None:
            yield ev
        else:
            yield ev | self.env.timeout(timeout)
            if not ev.triggered:
                pool.cancel(ev)
                return False
        return True

    def _db_cpu(self, step: PreparedStep, player: int) -> PSCpu:
        """The cores serving ``step``'s database work: the player's shard, or one of its read
        replicas (at random) for a read."""
        assert step.svc.database is not None
        shard = self._shard(step.svc.database, player)
        if step.read and shard.read_replicas:
            reps = shard.read_replicas
            return reps[self.pyrng.randrange(len(reps))] if len(reps) > 1 else reps[0]
        return shard.cpu

    def _cache_hit(self, step: PreparedStep, player: int,
                   key: int) -> Generator[Event, Any, bool]:
        """Look the step's data up in its cache: ``True`` on a hit (no database work)."""
        assert step.cache is not None and step.lookup is not None and step.hit is not None
        shards = self.caches[step.cache]
        cpu = shards[(player // self._k) % len(shards)]
        yield cpu.serve(step.lookup(key))
        return step.hit(key) < step.hit_ratio

    def _call(self, caller: Replica, step: PreparedStep, player: int,
              key: int) -> Generator[Event, Any, bool]:
        """A synchronous call to another service: hop, callee worker, work, hop back."""
        env = self.env
        yield caller.cpu.serve(self._rpc(key))
        yield env.timeout(self._hop(key))
        callee = self.pick(step.service)
        w = callee.workers
        ev = w.acquire()
        if ev is not None:
            if ev is REJECTED:
                yield env.timeout(self._hop(key))
                return False
            yield ev
        yield callee.cpu.serve(self._rpc(key))
        ok = yield from self._work(callee, step, player, key)
        w.release()
        yield env.timeout(self._hop(key))
        return ok

    def _consume(self, step: PreparedStep, player: int, key: int,
                 rep: Replica | None) -> Generator[Event, Any, None]:
        """An async step taken from the broker by a consumer worker.

        A message waiting for a consumer worker is still in the broker's backlog, so this
        queue is bounded by the broker's (``acquire_unbounded``).
        """
        remote = rep is None
        if rep is None:
            rep = self.pick(step.service)
        w = rep.workers
        ev = w.acquire_unbounded()
        if ev is not None:
            yield ev
        self.broker.take()
        if remote:
            yield rep.cpu.serve(self._rpc(key))
        yield from self._work(rep, step, player, key)
        w.release()
