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
on the replica's cores), its external wait (``empirical_by_rate``: by the requests per second
entering the deployment, metered at route entry), and its database time (a cache lookup first if
the step names a cache, the database only on a miss; a pooled connection held, the shard's
cores, or a read replica's for a read). A step writing a contended row (the player's, a hot
account's) runs its database work as a transaction of :mod:`sim.engine.contention`: row locks
(pessimistic) or a version check at commit with retries (optimistic).

Policies: the service's ``queue_limit`` (503 when the worker queue is full: shed; per
priority with ``queue: priority``, high first), the connection pool's timeout (timed out),
and the caller's policy around a call to another service (timeout, retries, breaker,
bulkhead: :mod:`sim.engine.policies`, entered from :meth:`RequestPath._call` only when the
call has one). Every draw and policy is prepared once per step (:class:`PreparedStep`), draws
keyed by the request's arrival index. An autoscaler (``sim.engine.policies``) changes the
live replicas through :meth:`RequestPath.set_live`.

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

from sim.engine.contention import Contention
from sim.engine.output import FAILED, OK, SHED, TIMED_OUT
from sim.engine.policies import CallPolicies
from sim.engine.sampling import Draw, DrawFactory, RateWait
from sim.engine.stations import DEAD, REJECTED, Pool, PSCpu, Replica, Shard, Stations
from sim.model.distributions import EmpiricalByRate
from sim.model.policies import CallPolicySpec
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
    policy: CallPolicySpec | None = None  # the caller's policy for a call to this step
    priority: int = 1                  # the operation's (0 high .. 2 low)
    idempotent: bool = True
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
    priority: int = 1


Rate = Callable[[], float]
"""The requests per second entering the deployment now (at full size)."""


def prepare_routes(topo: Topology, draws: DrawFactory,
                   rate: Rate | None = None) -> list[PreparedRoute]:
    """Resolve every route's draws once (never per request); ``rate`` is read by the
    ``empirical_by_rate`` waits (needed when ``topo.rate_dependent``)."""
    out = []
    for oi, route in enumerate(topo.routes):
        steps = tuple(_prepare_step(topo, draws, f"{route.operation}/{i}", st, route.entry,
                                    route.priority, oi, rate)
                      for i, st in enumerate(route.steps))
        gw = (draws.demand(route.gateway_cpu, f"{route.operation}/gateway:cpu")
              if route.gateway_cpu is not None else None)
        out.append(PreparedRoute(oi, route.entry, topo.services[route.entry], gw, steps,
                                 route.priority))
    return out


def _external(draws: DrawFactory, site: str, st: StepSpec, rate: Rate | None) -> Draw | None:
    """A step's external wait: plain, or by the entry rate (``empirical_by_rate``; one level
    is exactly its plain ``empirical``)."""
    ext = st.external
    if ext is None:
        return None
    if not isinstance(ext, EmpiricalByRate):
        return draws.demand(ext, f"{site}:external")
    if len(ext.levels) == 1:
        return draws.demand(ext.first, f"{site}:external")
    assert rate is not None, "an empirical_by_rate wait needs the deployment's entry rate"
    return RateWait(ext, draws.uniform(f"{site}:external"), rate)


def _prepare_step(topo: Topology, draws: DrawFactory, site: str, st: StepSpec, caller: int,
                  priority: int, op: int, rate: Rate | None) -> PreparedStep:
    def d(dist: Any, what: str) -> Draw | None:
        return draws.demand(dist, f"{site}:{what}") if dist is not None else None

    cache = topo.caches[st.cache] if st.cache is not None else None
    return PreparedStep(
        spec=st,
        service=st.service,
        svc=topo.services[st.service],
        is_async=st.is_async,
        cpu=d(st.cpu, "cpu"),
        external=_external(draws, site, st, rate),
        db=d(st.db, "db"),
        lock=st.lock,
        probability=st.probability,
        branch=draws.uniform(f"{site}:branch") if st.probability < 1.0 else None,
        read=st.read,
        cache=st.cache,
        hit_ratio=cache.hit_ratio if cache is not None else 0.0,
        lookup=d(cache.lookup, "cache") if cache is not None else None,
        hit=draws.uniform(f"{site}:hit") if cache is not None else None,
        calls=tuple(_prepare_step(topo, draws, f"{site}.{i}", c, st.service, priority, op,
                                  rate)
                    for i, c in enumerate(st.calls)),
        policy=(topo.services[caller].call_policies[st.service]
                if st.service != caller and not st.is_async
                and topo.services[caller].call_policies else None),
        priority=priority,
        idempotent=st.idempotent,
        sync_s=(topo.databases[topo.services[st.service].database].sync_s
                if st.db is not None and not st.read
                and topo.services[st.service].database is not None else 0.0),
        external_name=st.external_name,
        op=op,
        contended=st.contended,
    )


class RequestPath:
    """Walks requests along their prepared routes through a deployment's stations."""

    def __init__(self, env: simpy.Environment, topo: Topology, stations: Stations,
                 draws: DrawFactory, pyrng: random.Random, record: Record,
                 record_attempts: Callable[[int], None] | None = None,
                 contention: Contention | None = None):
        self.env = env
        self.topo = topo
        # the load balancer's view: live replicas it sends to (faults take dead ones out,
        # an autoscaler sets how many are live: ``exclude``, ``set_live``)
        self._built = stations.replicas
        self.live = [svc.replicas for svc in topo.services]
        self.dropped: list[set[int]] = [set() for _ in topo.services]
        self.targets = [list(reps[:n]) for reps, n in zip(self._built, self.live, strict=True)]
        self.shards = stations.shards
        self.locks = stations.locks
        self.caches = stations.caches
        self.broker = stations.broker
        self.pyrng = pyrng
        self.record = record
        self.recorded_attempts = record_attempts or (lambda _n: None)
        self.contention = contention
        # requests entering the deployment (only when a wait or the host's pauses read it)
        self.entry = entry = stations.entry
        self.routes = prepare_routes(
            topo, draws, (lambda: entry.full_rate(env.now)) if entry is not None else None)
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
        self.policies = (CallPolicies(env, [s.name for s in topo.services], pyrng)
                         if any(p is not None for s in topo.services for p in s.call_policies)
                         else None)

    def set_live(self, service: int, n: int) -> None:
        """Serve ``service`` from its first ``n`` replicas (the autoscaler's decision);
        requests already on a removed replica finish there."""
        assert 1 <= n <= len(self._built[service])
        self.live[service] = n
        self._retarget(service)

    def exclude(self, service: int, dropped: set[int]) -> None:
        """The health checks' view: replicas ``dropped`` (indices) get no new requests."""
        self.dropped[service] = set(dropped)
        self._retarget(service)

    def _retarget(self, service: int) -> None:
        gone = self.dropped[service]
        self.targets[service] = [r for i, r in enumerate(self._built[service][:self.live[service]])
                                 if i not in gone]

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
        if self.entry is not None:
            self.entry.tick(t0)
        route = self.routes[op]
        rep = self.pick(route.entry)
        if rep is None or rep.down:
            outcome, end = FAILED, t0  # no live replica, or a dead one (connection refused)
        else:
            epoch = rep.epoch
            w = rep.workers
            ev = w.acquire(route.priority)
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
            ev = pool.acquire()  # free at once (the common case): no generator entered
            if ev is not None and not (yield from self._wait_connection(pool, ev, svc)):
                return TIMED_OUT
            shard = self._shard(svc.database, player)
            on_primary = not (step.read and shard.read_replicas)
            if shard.down and on_primary:  # failover in progress: connections refused
                pool.release()
                return FAILED
            epoch = shard.epoch
            if step.contended:  # written rows locked or version-checked, retried if lost
                assert self.contention is not None
                if not (yield from self.contention.transact(step, key, player, pool,
                                                            self._connect, self._db_cpu)):
                    return FAILED
            else:
                yield self._db_cpu(step, player).serve(step.db(key))
                if step.sync_s:
                    yield env.timeout(step.sync_s)
                pool.release()
            if shard.epoch != epoch and on_primary:
                return FAILED  # the primary failed under the transaction
            if shard.commits is not None and not step.read:
                shard.commits.append(env.now)
        if step.calls:
            return (yield from self._steps(rep, step.service, step.calls, player, key))
        return OK

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

    def _call(self, caller: Replica, here: int, step: PreparedStep, player: int,
              key: int) -> Generator[Event, Any, int]:
        """A synchronous call to another service: the caller's RPC CPU, then the attempt (or
        the attempts, under the caller's policy for the callee)."""
        yield caller.cpu.serve(self._rpc(key))
        if step.policy is None or self.policies is None:
            return (yield from self._call_attempt(here, step, player, key))
        return (yield from self.policies.call(
            caller, here, step.service, step.policy, step.priority, step.idempotent,
            lambda: self._call_attempt(here, step, player, key)))

    def _call_attempt(self, here: int, step: PreparedStep, player: int,
                      key: int) -> Generator[Event, Any, int]:
        """One attempt of a call: hop, callee worker, work, hop back (its outcome)."""
        env = self.env
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
        ev = w.acquire(step.priority)
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
