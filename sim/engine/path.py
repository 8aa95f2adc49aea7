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
the step names a cache, the database only on a miss; a pooled connection held, the row lock
of a hot account if any, the shard's cores, or a read replica's for a read).

Policies: the service's ``queue_limit`` (503 when the worker queue is full; per priority with
``queue: priority``, high first), the connection pool's timeout (the request fails), and the
caller's policy around a call to another service (timeout, retries, breaker, bulkhead:
:mod:`sim.engine.policies`, entered from :meth:`RequestPath._call` only when the call has
one). Every draw and policy is prepared once per step (:class:`PreparedStep`), draws keyed by
the request's arrival index.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy
from simpy.events import Event

from sim.engine.policies import CallPolicies
from sim.engine.sampling import Draw, DrawFactory
from sim.engine.stations import REJECTED, Replica, Shard, Stations
from sim.model.policies import CallPolicySpec
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
    caller: int = -1                   # service that calls this step
    policy: CallPolicySpec | None = None  # the caller's policy for a call to this step
    priority: int = 1                  # the operation's (0 high .. 2 low)
    idempotent: bool = True


@dataclass(frozen=True)
class PreparedRoute:
    """A route with its steps prepared."""

    op: int
    entry: int
    entry_svc: ServiceSpec
    gateway_cpu: Draw | None
    steps: tuple[PreparedStep, ...]
    priority: int = 1


def prepare_routes(topo: Topology, draws: DrawFactory) -> list[PreparedRoute]:
    """Resolve every route's draws once (never per request)."""
    out = []
    for oi, route in enumerate(topo.routes):
        steps = tuple(_prepare_step(topo, draws, f"{route.operation}/{i}", st, route.entry,
                                    route.priority)
                      for i, st in enumerate(route.steps))
        gw = (draws.demand(route.gateway_cpu, f"{route.operation}/gateway:cpu")
              if route.gateway_cpu is not None else None)
        out.append(PreparedRoute(oi, route.entry, topo.services[route.entry], gw, steps,
                                 route.priority))
    return out


def _prepare_step(topo: Topology, draws: DrawFactory, site: str, st: StepSpec, caller: int,
                  priority: int) -> PreparedStep:
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
        calls=tuple(_prepare_step(topo, draws, f"{site}.{i}", c, st.service, priority)
                    for i, c in enumerate(st.calls)),
        caller=caller,
        policy=(topo.services[caller].call_policies[st.service]
                if st.service != caller and not st.is_async
                and topo.services[caller].call_policies else None),
        priority=priority,
        idempotent=st.idempotent,
    )


class RequestPath:
    """Walks requests along their prepared routes through a deployment's stations."""

    def __init__(self, env: simpy.Environment, topo: Topology, stations: Stations,
                 draws: DrawFactory, pyrng: random.Random, record: Record):
        self.env = env
        self.topo = topo
        # the live replicas of each service (an autoscaler changes them, ``set_live``)
        self.replicas = [reps[:svc.replicas] if svc.autoscaling is not None else reps
                         for reps, svc in zip(stations.replicas, topo.services, strict=True)]
        self._built = stations.replicas
        self.shards = stations.shards
        self.locks = stations.locks
        self.caches = stations.caches
        self.broker = stations.broker
        self.pyrng = pyrng
        self.record = record
        self.routes = prepare_routes(topo, draws)
        self._hop = draws.demand(topo.network_hop, "network_hop")
        self._rpc = draws.demand(topo.rpc_cpu, "rpc_cpu")
        self._publish = draws.demand(topo.publish, "publish")
        self._rr = [0] * len(topo.services)
        self._lb = topo.load_balancing
        self._k = topo.reduce_factor
        self.policies = (CallPolicies(env, [s.name for s in topo.services], pyrng)
                         if any(p is not None for s in topo.services for p in s.call_policies)
                         else None)

    def set_live(self, service: int, n: int) -> None:
        """Serve ``service`` from its first ``n`` replicas (the autoscaler's decision);
        requests already on a removed replica finish there."""
        assert 1 <= n <= len(self._built[service])
        self.replicas[service] = self._built[service][:n]
        self._rr[service] = 0

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
        ev = w.acquire(route.priority)
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
            ev = pool.acquire()
            if ev is not None:
                # bounded by construction: every waiter holds one of the service's workers
                assert ev is not REJECTED, f"{pool.name}: connection queue over its bound"
                timeout = svc.pool_timeout_s
                if timeout is None:
                    yield ev
                else:
                    yield ev | env.timeout(timeout)
                    if not ev.triggered:
                        pool.cancel(ev)
                        return False
            lock = None
            if step.lock is not None:
                subs = self.locks[step.lock]
                lock = subs[self.pyrng.randrange(len(subs))] if len(subs) > 1 else subs[0]
                lev = lock.acquire()
                if lev is not None:
                    assert lev is not REJECTED, f"{lock.name}: lock queue over its bound"
                    yield lev
            shard = self._shard(svc.database, player)
            cpu = shard.cpu
            if step.read and shard.read_replicas:
                reps = shard.read_replicas
                cpu = reps[self.pyrng.randrange(len(reps))] if len(reps) > 1 else reps[0]
            yield cpu.serve(step.db(key))
            if lock is not None:
                lock.release()
            pool.release()
        if step.calls:
            return (yield from self._steps(rep, step.service, step.calls, player, key))
        return True

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
        """A synchronous call to another service: the caller's RPC CPU, then the attempt (or
        the attempts, under the caller's policy for the callee)."""
        yield caller.cpu.serve(self._rpc(key))
        if step.policy is None or self.policies is None:
            return (yield from self._attempt(step, player, key))
        return (yield from self.policies.call(
            caller, step.caller, step.service, step.policy, step.priority, step.idempotent,
            lambda: self._attempt(step, player, key)))

    def _attempt(self, step: PreparedStep, player: int,
                 key: int) -> Generator[Event, Any, bool]:
        """One attempt of a call: hop, callee worker, work, hop back."""
        env = self.env
        yield env.timeout(self._hop(key))
        callee = self.pick(step.service)
        w = callee.workers
        ev = w.acquire(step.priority)
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
