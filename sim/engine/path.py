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

Policies today: the service's ``queue_limit`` (503 when the worker queue is full: shed) and
the connection pool's timeout (timed out). Every draw is prepared once per step
(:class:`PreparedStep`), keyed by the request's arrival index.

Each request ends with an outcome code (``sim.engine.output``: OK, FAILED, TIMED_OUT, SHED).
Faults (``sim.engine.faults``) act through small hooks: a replica's ``down``/``epoch`` (a
crash), the load balancer's view of live replicas (``targets``), a shard's ``down``/``epoch``
and commit log (a failover), ``links`` (network latency and loss between services),
``external_slow`` (a slowed dependency), the broker's ``down`` event; players' retries wrap
the request (:meth:`RequestPath.request_retrying`). Without faults every hook is a cheap
attribute test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy
from simpy.events import Event

from sim.engine.output import FAILED, OK, SHED, TIMED_OUT
from sim.engine.sampling import Draw, DrawFactory
from sim.engine.stations import DEAD, REJECTED, Replica, Shard, Stations
from sim.model.topology import ServiceSpec, StepSpec, Topology

Record = Callable[[float, int, float, int], None]
CONSUMER_RETRY_S = 0.1
"""How often a message with no live consumer replica is offered again (s)."""


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
    sync_s: float = 0.0            # a write's wait for the replica (synchronous replication)
    external_name: str | None = None


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
        steps = tuple(_prepare_step(topo, draws, f"{route.operation}/{i}", st)
                      for i, st in enumerate(route.steps))
        gw = (draws.demand(route.gateway_cpu, f"{route.operation}/gateway:cpu")
              if route.gateway_cpu is not None else None)
        out.append(PreparedRoute(oi, route.entry, topo.services[route.entry], gw, steps))
    return out


def _prepare_step(topo: Topology, draws: DrawFactory, site: str,
                  st: StepSpec) -> PreparedStep:
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
        calls=tuple(_prepare_step(topo, draws, f"{site}.{i}", c)
                    for i, c in enumerate(st.calls)),
        sync_s=(topo.databases[topo.services[st.service].database].sync_s
                if st.db is not None and not st.read
                and topo.services[st.service].database is not None else 0.0),
        external_name=st.external_name,
    )


class RequestPath:
    """Walks requests along their prepared routes through a deployment's stations."""

    def __init__(self, env: simpy.Environment, topo: Topology, stations: Stations,
                 draws: DrawFactory, pyrng: random.Random, record: Record,
                 record_attempts: Callable[[int], None] | None = None):
        self.env = env
        self.topo = topo
        # the load balancer's view: replicas it sends to (faults take dead ones out)
        self.targets = [list(reps) for reps in stations.replicas]
        self.shards = stations.shards
        self.locks = stations.locks
        self.caches = stations.caches
        self.broker = stations.broker
        self.pyrng = pyrng
        self.record = record
        self.recorded_attempts = record_attempts or (lambda _n: None)
        self.routes = prepare_routes(topo, draws)
        self._hop = draws.demand(topo.network_hop, "network_hop")
        self._rpc = draws.demand(topo.rpc_cpu, "rpc_cpu")
        self._publish = draws.demand(topo.publish, "publish")
        self._rr = [0] * len(topo.services)
        self._lb = topo.load_balancing
        self._k = topo.reduce_factor
        # fault hooks (sim.engine.faults sets them; empty without faults)
        self.links: dict[tuple[int, int], tuple[float, float, float]] = {}
        self.external_slow: dict[str, float] = {}
        self.failed_players: set[int] | None = None   # collected for a reconnect storm
        # what a source starts per arrival: players retry failed requests when told to
        self.walk = self.request_retrying if topo.retry is not None else self.request

    # ------------------------------------------------------------------ choices

    def pick(self, service: int) -> Replica | None:
        """A replica of ``service`` by the deployment's load-balancing policy (None when the
        load balancer has no live replica left)."""
        reps = self.targets[service]
        n = len(reps)
        if n == 1:
            return reps[0]
        if n == 0:
            return None
        lb = self._lb
        if lb == "round_robin":
            i = self._rr[service] % n
            self._rr[service] = i + 1
            return reps[i]
        if lb == "least_outstanding":
            return min(reps, key=lambda r: r.workers.busy + len(r.workers.waiting))
        return reps[self.pyrng.randrange(len(reps))]

    def _shard(self, database: int, player: int) -> Shard:
        shards = self.shards[database]
        return shards[(player // self._k) % len(shards)]

    # ------------------------------------------------------------------ processes

    def request(self, op: int, player: int, key: int, attempt: bool = False
                ) -> Generator[Event, Any, Any]:
        """One client request: enter, walk the route, record the response time and outcome.

        With ``attempt`` (a try of :meth:`request_retrying`) nothing is recorded: the process
        returns (outcome, time the client learnt it)."""
        env = self.env
        t0 = env.now
        route = self.routes[op]
        rep = self.pick(route.entry)
        if rep is None or rep.down:
            outcome, end = FAILED, t0  # no live replica, or a dead one (connection refused)
        else:
            epoch = rep.epoch
            w = rep.workers
            ev = w.acquire()
            if ev is REJECTED:
                outcome, end = SHED, t0
            elif ev is not None and (yield ev) is DEAD:
                outcome, end = FAILED, env.now  # queued on a replica that crashed
            else:
                if route.gateway_cpu is not None:
                    yield rep.cpu.serve(route.gateway_cpu(key))
                outcome = yield from self._steps(rep, route.entry, route.steps, player, key)
                w.release()
                end = env.now
                if rep.epoch != epoch:  # the replica crashed under the request
                    outcome, end = FAILED, rep.crashed_at
        if attempt:
            return outcome, end
        self.record(t0, op, end - t0, outcome)
        if outcome and self.failed_players is not None:
            self.failed_players.add(player)
        return None

    def request_retrying(self, op: int, player: int, key: int) -> Generator[Event, Any, None]:
        """A request whose player retries errors and timeouts (``topo.retry``): recorded once,
        from the first try to the last answer, with its number of attempts."""
        retry = self.topo.retry
        assert retry is not None
        env = self.env
        t0 = env.now
        n = 0
        while True:
            n += 1
            outcome, end = yield env.process(self.request(op, player, key, attempt=True))
            if outcome == OK or n >= retry.max_attempts:
                break
            wait = min(retry.cap_s, retry.backoff_s * retry.multiplier ** (n - 1))
            if retry.jitter == "full":
                wait *= self.pyrng.random()
            elif retry.jitter == "equal":
                wait *= 0.5 + 0.5 * self.pyrng.random()
            yield env.timeout(max(0.0, end + wait - env.now))
        self.record(t0, op, end - t0, outcome)
        self.recorded_attempts(n)
        if outcome and self.failed_players is not None:
            self.failed_players.add(player)

    def _steps(self, rep: Replica, here: int, steps: tuple[PreparedStep, ...], player: int,
               key: int) -> Generator[Event, Any, int]:
        """Take ``steps`` in order from replica ``rep`` of service ``here``; the outcome of
        the first that fails, else OK."""
        for step in steps:
            if step.branch is not None and step.branch(key) >= step.probability:
                continue  # branch not taken
            if step.is_async:
                if not (yield from self._publish_step(rep, here, step, player, key)):
                    return FAILED
                continue
            if step.service == here:
                outcome = yield from self._work(rep, step, player, key)
            else:
                outcome = yield from self._call(rep, here, step, player, key)
            if outcome:
                return outcome
        return OK

    def _publish_step(self, rep: Replica, here: int, step: PreparedStep, player: int,
                      key: int) -> Generator[Event, Any, bool]:
        """Hand an async step to the broker; ``False`` if the broker refused it (full)."""
        broker = self.broker
        if broker.down is not None:  # an outage: publishers keep messages, then wait
            if broker.held >= broker.hold_limit:
                yield broker.down
            else:
                broker.held += 1
        if not broker.put():  # full: refused
            return False
        if step.service == here:
            self.env.process(self._consume(step, player, key, rep))
        else:
            yield rep.cpu.serve(self._rpc(key))
            yield self.env.timeout(self._publish(key))
            self.env.process(self._consume(step, player, key, None))
        return True

    def _work(self, rep: Replica, step: PreparedStep, player: int,
              key: int) -> Generator[Event, Any, int]:
        """CPU, external wait and database work of a step on replica ``rep``."""
        env = self.env
        if step.cpu is not None:
            yield rep.cpu.serve(step.cpu(key))
        if step.external is not None:
            wait = step.external(key)
            if self.external_slow:
                wait *= self.external_slow.get(step.external_name or "", 1.0)
            yield env.timeout(wait)
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
                        return TIMED_OUT
            shard = self._shard(svc.database, player)
            on_primary = not (step.read and shard.read_replicas)
            if shard.down and on_primary:  # failover in progress: connections refused
                pool.release()
                return FAILED
            epoch = shard.epoch
            lock = None
            if step.lock is not None:
                subs = self.locks[step.lock]
                lock = subs[self.pyrng.randrange(len(subs))] if len(subs) > 1 else subs[0]
                lev = lock.acquire()
                if lev is not None:
                    assert lev is not REJECTED, f"{lock.name}: lock queue over its bound"
                    yield lev
            cpu = shard.cpu
            if step.read and shard.read_replicas:
                reps = shard.read_replicas
                cpu = reps[self.pyrng.randrange(len(reps))] if len(reps) > 1 else reps[0]
            yield cpu.serve(step.db(key))
            if step.sync_s:
                yield env.timeout(step.sync_s)
            if lock is not None:
                lock.release()
            pool.release()
            if shard.epoch != epoch and on_primary:
                return FAILED  # the primary failed under the transaction
            if shard.commits is not None and not step.read:
                shard.commits.append(env.now)
        if step.calls:
            return (yield from self._steps(rep, step.service, step.calls, player, key))
        return OK

    def _cache_hit(self, step: PreparedStep, player: int,
                   key: int) -> Generator[Event, Any, bool]:
        """Look the step's data up in its cache: ``True`` on a hit (no database work)."""
        assert step.cache is not None and step.lookup is not None and step.hit is not None
        shards = self.caches[step.cache]
        cpu = shards[(player // self._k) % len(shards)]
        yield cpu.serve(step.lookup(key))
        return step.hit(key) < step.hit_ratio

    def _call(self, caller: Replica, here: int, step: PreparedStep, player: int,
              key: int) -> Generator[Event, Any, int]:
        """A synchronous call to another service: hop, callee worker, work, hop back."""
        env = self.env
        yield caller.cpu.serve(self._rpc(key))
        extra = 0.0
        if self.links:
            link = self.links.get((here, step.service))
            if link is not None:
                extra, loss, lost_wait = link
                if loss and self.pyrng.random() < 2.0 * loss - loss * loss:
                    yield env.timeout(lost_wait)  # request or answer lost: wait it out
                    return TIMED_OUT
        yield env.timeout(self._hop(key) + extra)
        callee = self.pick(step.service)
        if callee is None or callee.down:
            yield env.timeout(self._hop(key) + extra)
            return FAILED
        epoch = callee.epoch
        w = callee.workers
        ev = w.acquire()
        if ev is not None:
            if ev is REJECTED:
                yield env.timeout(self._hop(key) + extra)
                return SHED
            if (yield ev) is DEAD:
                return FAILED
        yield callee.cpu.serve(self._rpc(key))
        outcome = yield from self._work(callee, step, player, key)
        w.release()
        if callee.epoch != epoch:
            return FAILED
        yield env.timeout(self._hop(key) + extra)
        return outcome

    def _consume(self, step: PreparedStep, player: int, key: int,
                 rep: Replica | None) -> Generator[Event, Any, None]:
        """An async step taken from the broker by a consumer worker (at-least-once: a message
        whose consumer died before taking it is delivered again).

        A message waiting for a consumer worker is still in the broker's backlog, so this
        queue is bounded by the broker's (``acquire_unbounded``).
        """
        env = self.env
        if self.broker.down is not None:
            yield self.broker.down  # the broker is out: delivered when it is back
        if rep is not None and rep.down:
            rep = None  # the publishing replica died: another consumer takes it
        remote = rep is None
        if rep is None:
            rep = self.pick(step.service)
            while rep is None or rep.down:  # no live consumer: the message waits in the broker
                yield env.timeout(CONSUMER_RETRY_S)
                rep = self.pick(step.service)
        w = rep.workers
        ev = w.acquire_unbounded()
        if ev is not None and (yield ev) is DEAD:
            env.process(self._consume(step, player, key, None))  # redelivered elsewhere
            return
        self.broker.take()
        if remote:
            yield rep.cpu.serve(self._rpc(key))
        yield from self._work(rep, step, player, key)
        w.release()
