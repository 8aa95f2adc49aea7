"""The SimPy engine: requests walk their operation's route through the stations of a topology.

Stations:

* worker pools of each service replica (a request holds a worker for its whole call,
  downstream calls and database time included, as real thread pools do);
* the replica's cores, shared by processor sharing among the busy workers;
* database connection pools (per replica and database) and the database shard's cores;
* hot-account row locks, held during the database time of the write;
* the broker: async steps are published and return at once, consumers drain them with their
  own workers.

The engine is lean on purpose (no SimPy ``Resource`` objects, batched random draws, one
timer per processor-sharing station) so that it stays close to a minimal hand-written SimPy
model in speed.
"""

from __future__ import annotations

import heapq
import random
from array import array
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np
import simpy
from simpy.events import Event

from sim.engine.demands import RequestDemands, StepDemand
from sim.engine.waits import WaitHistogram
from sim.model.distributions import Distribution
from sim.model.topology import Route, StepSpec, Topology


class Sampler:
    """Draws from a distribution in batches (numpy is slow one value at a time)."""

    __slots__ = ("_buf", "_dist", "_i", "_rng")

    def __init__(self, dist: Distribution, rng: np.random.Generator):
        self._dist = dist
        self._rng = rng
        self._buf: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        i = self._i
        if i >= len(self._buf):
            self._buf = self._dist.sample_s(self._rng, 2048).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]


class Pool:
    """A counted resource with a FIFO queue: worker pool, connection pool or row lock.

    ``acquire`` answers ``None`` when a unit is free at once (no event is created), an
    event to wait on otherwise. Time integrals of busy units and of the queue are kept for
    utilisation and queue-length statistics.
    """

    __slots__ = (
        "_last", "_since", "area_busy", "area_queue", "busy", "capacity", "completions", "env",
        "kind", "name", "waiting", "waits",
    )

    def __init__(self, env: simpy.Environment, name: str, kind: str, capacity: int):
        self.env = env
        self.name = name
        self.kind = kind
        self.capacity = capacity
        self.busy = 0
        self.waiting: deque[Event] = deque()
        self.area_busy = 0.0
        self.area_queue = 0.0
        self.completions = 0
        self._last = 0.0
        self.waits: WaitHistogram | None = None  # set by the engine for a run
        self._since: dict[Event, float] = {}     # waiting request -> when it started waiting

    def _account(self) -> None:
        now = self.env._now
        dt = now - self._last
        if dt > 0.0:
            self.area_busy += self.busy * dt
            self.area_queue += len(self.waiting) * dt
            self._last = now

    def acquire(self) -> Event | None:
        """Take a unit: ``None`` if granted at once, else an event granted in FIFO order."""
        self._account()
        if self.busy < self.capacity:
            self.busy += 1
            if self.waits is not None:
                self.waits.record(self.env._now, 0.0)
            return None
        ev = Event(self.env)
        self.waiting.append(ev)
        if self.waits is not None:
            self._since[ev] = self.env._now
        return ev

    def cancel(self, ev: Event) -> None:
        """Withdraw a waiting request (timed out); a request already granted is released."""
        self._account()
        if ev.triggered:
            self.release()
        else:
            self.waiting.remove(ev)
            self._since.pop(ev, None)

    def reject(self, ev: Event) -> None:
        """Turn away a request that just joined the queue (queue limit reached)."""
        self.waiting.remove(ev)
        self._since.pop(ev, None)

    def release(self) -> None:
        """Give a unit back, handing it to the first waiter if any."""
        self._account()
        self.completions += 1
        waiting = self.waiting
        while waiting:
            ev = waiting.popleft()
            if not ev.triggered:
                if self.waits is not None:
                    now = self.env._now
                    self.waits.record(now, now - self._since.pop(ev, now))
                ev.succeed()
                return
        self.busy -= 1

    def snapshot(self) -> tuple[float, float, int]:
        """Cumulative (busy-time, queue-time, completions) up to now."""
        self._account()
        return self.area_busy, self.area_queue, self.completions


PS_TOLERANCE = 1e-9
"""Relative slack (to the simulated clock) within which processor-sharing jobs finish together:
rounding of ``delay * rate`` leaves a few ulps; jobs this close are completed by one timer."""


class PSCpu:
    """Cores shared by processor sharing: n jobs on c cores each progress at min(1, c/n).

    Implemented with a virtual clock: each job finishes when the virtual time reaches its
    start plus its work, so one heap and one live timer serve the whole station. When the
    jobs can never outnumber the cores (``max_jobs <= cores``), each job is a plain timeout.
    """

    __slots__ = (
        "_gen", "_heap", "_last", "_seq", "_timer_rate1", "_timer_vt", "_vtime", "area_busy",
        "area_excess", "area_jobs",
        "completions", "cores", "env", "kind", "n", "name", "never_shares", "waits",
    )

    def __init__(self, env: simpy.Environment, name: str, kind: str, cores: int, max_jobs: int):
        self.env = env
        self.name = name
        self.kind = kind
        self.cores = cores
        self.never_shares = max_jobs <= cores
        self.n = 0
        self._heap: list[tuple[float, int, Event, float, float]] = []  # + start, work
        self.waits: WaitHistogram | None = None  # set by the engine for a run
        self._seq = count()
        self._vtime = 0.0
        self._last = 0.0
        self._gen = 0
        self._timer_vt = -1.0       # virtual finish time the live timer aims at (-1: none)
        self._timer_rate1 = False   # the live timer was set while jobs ran at full speed
        self.area_busy = 0.0
        self.area_jobs = 0.0
        self.area_excess = 0.0
        self.completions = 0

    def _advance(self) -> None:
        now = self.env._now
        dt = now - self._last
        if dt > 0.0:
            n = self.n
            if n:
                c = self.cores
                if n <= c:
                    self._vtime += dt
                    self.area_busy += n * dt
                else:
                    self._vtime += dt * c / n
                    self.area_busy += c * dt
                    self.area_excess += (n - c) * dt
                self.area_jobs += n * dt
            self._last = now

    def serve(self, work: float) -> Event:
        """An event that fires when ``work`` seconds of CPU have been given to this job."""
        self._advance()
        self.n += 1
        if self.never_shares:
            if self.waits is not None:
                self.waits.record(self.env._now, 0.0)
            ev = self.env.timeout(work)
            ev.callbacks.append(self._done_plain)
            return ev
        ev = Event(self.env)
        finish = self._vtime + work
        heapq.heappush(self._heap, (finish, next(self._seq), ev, self.env._now, work))
        if self._timer_rate1 and self.n <= self.cores and 0.0 <= self._timer_vt <= finish:
            return ev  # still full speed and the earliest finish is unchanged: timer stays valid
        self._schedule()
        return ev

    def _done_plain(self, _ev: Event) -> None:
        self._advance()
        self.n -= 1
        self.completions += 1

    def _schedule(self) -> None:
        heap = self._heap
        if not heap:
            self._timer_vt = -1.0
            return
        n = self.n
        full = n <= self.cores
        rate = 1.0 if full else self.cores / n
        target = heap[0][0]
        delay = (target - self._vtime) / rate
        self._timer_vt = target
        self._timer_rate1 = full
        self._gen += 1
        gen = self._gen
        t = self.env.timeout(delay if delay > 0.0 else 0.0)
        t.callbacks.append(lambda _e: self._fire(gen))

    def _fire(self, gen: int) -> None:
        if gen != self._gen:
            return  # superseded by a later arrival or departure
        self._advance()
        heap = self._heap
        # The timer was set for the job at the top of the heap (nothing arrived or left
        # since, or ``gen`` would differ): complete it whatever the rounding left of its work.
        # Past 2^14 s the clock's resolution exceeds any absolute tolerance, and a leftover
        # of a few ulps used to schedule zero-length timers at the same instant forever.
        target = self._timer_vt
        slack = PS_TOLERANCE * max(1.0, self.env._now)
        assert heap and heap[0][0] == target, "PS timer fired for a job not at the heap top"
        assert target - self._vtime <= slack, (
            f"PS timer fired {target - self._vtime:g} s of virtual work early")
        limit = max(self._vtime, target) + slack
        waits = self.waits
        while heap and heap[0][0] <= limit:
            _, _, ev, start, work = heapq.heappop(heap)
            self.n -= 1
            self.completions += 1
            if waits is not None:  # time lost to sharing the cores
                now = self.env._now
                waits.record(now, max(0.0, now - start - work))
            ev.succeed()
        self._schedule()

    def snapshot(self) -> tuple[float, float, int]:
        """Cumulative (busy core-time, excess-jobs time, completions) up to now."""
        self._advance()
        return self.area_busy, self.area_excess, self.completions


class Backlog:
    """The broker: counts messages published and not yet taken by a consumer."""

    __slots__ = ("_last", "area_busy", "area_queue", "backlog", "capacity", "completions", "env",
                 "kind", "name")

    def __init__(self, env: simpy.Environment, name: str):
        self.env = env
        self.name = name
        self.kind = "broker"
        self.capacity = 0
        self.backlog = 0
        self.area_busy = 0.0
        self.area_queue = 0.0
        self.completions = 0
        self._last = 0.0

    def _account(self) -> None:
        now = self.env._now
        dt = now - self._last
        if dt > 0.0:
            self.area_queue += self.backlog * dt
            self._last = now

    def put(self) -> None:
        self._account()
        self.backlog += 1

    def take(self) -> None:
        self._account()
        self.backlog -= 1
        self.completions += 1

    def snapshot(self) -> tuple[float, float, int]:
        self._account()
        return 0.0, self.area_queue, self.completions


@dataclass
class Replica:
    """One replica of a service: its workers, its cores and its connection pools."""

    workers: Pool
    cpu: PSCpu
    db_pool: Pool | None


@dataclass
class Shard:
    """One database shard: its cores."""

    cpu: PSCpu


@dataclass
class StationSeries:
    """Cumulative station integrals sampled at each bin boundary."""

    name: str
    kind: str
    servers: int
    busy: list[float] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)
    completions: list[int] = field(default_factory=list)
    wait_counts: np.ndarray | None = None  # (segments, buckets), see sim.engine.waits


@dataclass
class RunOutput:
    """Raw output of one replication of one deployment."""

    deployment: str
    duration_s: float
    bin_s: float
    t: np.ndarray          # arrival time of each finished request (s)
    op: np.ndarray         # operation index
    latency: np.ndarray    # response time (s)
    error: np.ndarray      # bool: the request failed (rejected, pool timeout)
    stations: list[StationSeries]


class Engine:
    """Simulates one deployment for one replication."""

    def __init__(self, topo: Topology, rng: np.random.Generator, bin_s: float = 1.0,
                 on_bin: Callable[[float], None] | None = None,
                 demands: RequestDemands | None = None):
        self.topo = topo
        self.on_bin = on_bin
        self.env = simpy.Environment()
        self.rng = rng
        self.pyrng = random.Random(int(rng.integers(0, 2**63)))
        # each request's service demands, keyed by the request (sim/engine/demands.py)
        self.demands = demands or RequestDemands(
            topo.routes, np.random.SeedSequence(int(rng.integers(0, 2**63))))
        self.bin_s = bin_s
        env = self.env
        self._samplers: dict[int, Sampler] = {}
        self.replicas: list[list[Replica]] = []
        for s in topo.services:
            reps = []
            for r in range(s.replicas):
                tag = f"{s.name}[{r}]"
                reps.append(
                    Replica(
                        workers=Pool(env, f"{tag}.workers", "workers", s.workers),
                        cpu=PSCpu(env, f"{tag}.cpu", "cpu", s.cores, max_jobs=s.workers),
                        db_pool=Pool(env, f"{tag}.db_pool", "db_pool", s.db_pool)
                        if s.db_pool
                        else None,
                    )
                )
            self.replicas.append(reps)
        self.shards: list[list[Shard]] = []
        for di, d in enumerate(topo.databases):
            conns = sum(s.db_pool * s.replicas for s in topo.services if s.database == di)
            self.shards.append(
                [
                    Shard(PSCpu(env, f"{d.name}[{i}].cpu", "db_cpu", d.cores, max_jobs=conns))
                    for i in range(d.shards)
                ]
            )
        self.locks: list[list[Pool]] = [
            [Pool(env, f"lock:{lk.name}[{i}]", "lock", 1) for i in range(lk.sub_accounts)]
            for lk in topo.locks
        ]
        self.broker = Backlog(env, "broker")
        self._rr = [0] * len(topo.services)
        self._hop = self._sampler(topo.network_hop)
        self._rpc = self._sampler(topo.rpc_cpu)
        self._publish = self._sampler(topo.publish)
        # compact typed arrays: 8 + 2 + 8 + 1 bytes per finished request
        self._rec_t = array("d")
        self._rec_op = array("h")
        self._rec_lat = array("d")
        self._rec_err = array("b")
        self._series: list[tuple[Any, StationSeries]] = []
        for st in self.stations():
            servers = st.capacity if isinstance(st, Pool) else getattr(st, "cores", 0)
            self._series.append((st, StationSeries(st.name, st.kind, servers)))

    # ------------------------------------------------------------------ helpers

    def stations(self) -> Iterable[Any]:
        """Every station of the simulated topology."""
        for reps in self.replicas:
            for r in reps:
                yield r.workers
                yield r.cpu
                if r.db_pool is not None:
                    yield r.db_pool
        for shards in self.shards:
            for sh in shards:
                yield sh.cpu
        for locks in self.locks:
            yield from locks
        yield self.broker

    def _sampler(self, dist: Distribution | None) -> Callable[[], float]:
        if dist is None:
            return lambda: 0.0
        key = id(dist)
        s = self._samplers.get(key)
        if s is None:
            s = self._samplers[key] = Sampler(dist, self.rng)
        return s

    def _pick(self, service: int) -> Replica:
        reps = self.replicas[service]
        if len(reps) == 1:
            return reps[0]
        lb = self.topo.load_balancing
        if lb == "round_robin":
            i = self._rr[service]
            self._rr[service] = (i + 1) % len(reps)
            return reps[i]
        if lb == "least_outstanding":
            return min(reps, key=lambda r: r.workers.busy + len(r.workers.waiting))
        return reps[self.pyrng.randrange(len(reps))]

    def _shard(self, database: int, player: int) -> Shard:
        shards = self.shards[database]
        return shards[(player // self.topo.reduce_factor) % len(shards)]

    # ------------------------------------------------------------------ processes

    def _work(self, rep: Replica, step: StepSpec, player: int, svc_db: int | None,
              timeout: float | None, dem: StepDemand) -> Generator[Event, Any, bool]:
        """CPU, external wait and database work ``dem`` of a step on replica ``rep``."""
        env = self.env
        if step.cpu is not None:
            yield rep.cpu.serve(dem[0])
        if step.external is not None:
            yield env.timeout(dem[1])
        if step.db is not None:
            pool = rep.db_pool
            assert pool is not None and svc_db is not None
            ev = pool.acquire()
            if ev is not None:
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
                    yield lev
            yield self._shard(svc_db, player).cpu.serve(dem[2])
            if lock is not None:
                lock.release()
            pool.release()
        return True

    def _consume(self, step: StepSpec, player: int, rep: Replica | None,
                 dem: StepDemand) -> Generator:
        """An async step taken from the broker by a consumer worker."""
        svc = self.topo.services[step.service]
        remote = rep is None
        if rep is None:
            rep = self._pick(step.service)
        w = rep.workers
        ev = w.acquire()
        if ev is not None:
            yield ev
        self.broker.take()
        if remote:
            yield rep.cpu.serve(self._rpc())
        yield from self._work(rep, step, player, svc.database, svc.pool_timeout_s, dem)
        w.release()

    def request(self, route: Route, op: int, player: int) -> Generator:
        """One client request: enter, walk the route, record the response time."""
        env = self.env
        t0 = env._now
        topo = self.topo
        entry_svc = topo.services[route.entry]
        rep = self._pick(route.entry)
        w = rep.workers
        ok = True
        gateway_cpu, dems = self.demands.draw(op)  # drawn even if rejected: streams stay aligned
        ev = w.acquire()
        if ev is not None:
            if entry_svc.queue_limit is not None and len(w.waiting) > entry_svc.queue_limit:
                w.reject(ev)
                self._record(t0, op, env._now - t0, True)
                return
            yield ev
        if route.gateway_cpu is not None:
            yield rep.cpu.serve(gateway_cpu)
        for step, dem in zip(route.steps, dems, strict=True):
            if step.is_async:
                self.broker.put()
                if step.service == route.entry:
                    env.process(self._consume(step, player, rep, dem))
                else:
                    yield rep.cpu.serve(self._rpc())
                    yield env.timeout(self._publish())
                    env.process(self._consume(step, player, None, dem))
                continue
            svc = topo.services[step.service]
            if step.service == route.entry:
                ok = yield from self._work(rep, step, player, svc.database, svc.pool_timeout_s,
                                           dem)
            else:
                ok = yield from self._remote(rep, step, player, svc, dem)
            if not ok:
                break
        w.release()
        self._record(t0, op, env._now - t0, not ok)

    def _remote(self, caller: Replica, step: StepSpec, player: int, svc: Any,
                dem: StepDemand) -> Generator:
        """A synchronous call to another service: hop, callee worker, work, hop back."""
        env = self.env
        yield caller.cpu.serve(self._rpc())
        yield env.timeout(self._hop())
        callee = self._pick(step.service)
        w = callee.workers
        ev = w.acquire()
        if ev is not None:
            if svc.queue_limit is not None and len(w.waiting) > svc.queue_limit:
                w.reject(ev)
                yield env.timeout(self._hop())
                return False
            yield ev
        yield callee.cpu.serve(self._rpc())
        ok = yield from self._work(callee, step, player, svc.database, svc.pool_timeout_s, dem)
        w.release()
        yield env.timeout(self._hop())
        return ok

    def _record(self, t0: float, op: int, latency: float, error: bool) -> None:
        self._rec_t.append(t0)
        self._rec_op.append(op)
        self._rec_lat.append(latency)
        self._rec_err.append(error)

    def _open_source(self, chunks: Iterable[Any], duration: float) -> Generator:
        env = self.env
        routes = self.topo.routes
        proc = env.process
        req = self.request
        timeout = env.timeout
        for ch in chunks:
            ts = ch.t.tolist()
            ops = ch.op.tolist()
            players = ch.player.tolist()
            for t, o, p in zip(ts, ops, players, strict=True):
                if t >= duration:
                    return
                dt = t - env._now
                if dt > 0.0:
                    yield timeout(dt)
                proc(req(routes[o], o, p))

    def _closed_user(self, user: int, think: Callable[[], float], weights: np.ndarray,
                     duration: float, rng: np.random.Generator) -> Generator:
        env = self.env
        routes = self.topo.routes
        cum = np.cumsum(weights / weights.sum())
        draws: list[int] = []
        while True:
            z = think()
            if z > 0.0:
                yield env.timeout(z)
            if env._now >= duration:
                return
            if not draws:
                draws = np.searchsorted(cum, rng.random(256), side="right").tolist()
            o = min(draws.pop(), len(routes) - 1)
            yield from self.request(routes[o], o, user)

    def _sampler_proc(self, duration: float) -> Generator:
        env = self.env
        n = int(np.ceil(duration / self.bin_s))
        on_bin = self.on_bin
        for i in range(1, n + 1):
            dt = min(i * self.bin_s, duration) - env._now
            yield env.timeout(dt)
            if on_bin is not None:
                on_bin(dt)
            for st, ser in self._series:
                b, q, c = st.snapshot()
                ser.busy.append(b)
                ser.queue.append(q)
                ser.completions.append(c)

    # ------------------------------------------------------------------ run

    def run_open(self, chunks: Iterable[Any], duration: float,
                 op_rate: Callable[[np.ndarray], np.ndarray] | None = None) -> RunOutput:
        """Simulate ``duration`` seconds of open arrivals given as chunks (t, op, player).

        In a reduced run (reduce factor k > 1) hot accounts are global: the other k - 1
        partitions write them too. ``op_rate(t)`` (arrivals/s per operation of the represented
        partition) then drives *phantom writers*, Poisson at k - 1 times the partition's rate
        of each locked step, that take the row lock for a sampled database time, so the
        represented partition meets the whole system's contention on the hot row.
        """
        self.env.process(self._open_source(chunks, duration))
        if op_rate is not None and self.topo.reduce_factor > 1 and self.locks:
            self._start_phantoms(op_rate, duration)
        return self._run(duration)

    def _start_phantoms(self, op_rate: Callable[[np.ndarray], np.ndarray],
                        duration: float) -> None:
        k = self.topo.reduce_factor
        grid = np.linspace(0.0, duration, 257)
        rates = op_rate(grid)  # shape (len(grid), n_ops)
        for oi, route in enumerate(self.topo.routes):
            for step in route.steps:
                if step.lock is None or step.db is None:
                    continue
                lam = (k - 1) * rates[:, oi]
                if lam.max() <= 0.0:
                    continue
                seed = int(self.rng.integers(0, 2**63))
                self.env.process(self._phantom_writer(step, grid, lam, duration, seed))

    def _phantom_writer(self, step: StepSpec, grid: np.ndarray, lam: np.ndarray,
                        duration: float, seed: int) -> Generator:
        """Writers of the other partitions: lock, hold for a database time, release."""
        env = self.env
        rng = np.random.default_rng(seed)
        lam_max = float(lam.max())
        hold = Sampler(step.db, rng) if step.db is not None else (lambda: 0.0)
        subs = self.locks[step.lock] if step.lock is not None else []
        t = 0.0
        while True:
            gaps = rng.exponential(1.0 / lam_max, 1024)
            keep = rng.random(1024)
            for gap, u in zip(gaps.tolist(), keep.tolist(), strict=True):
                t += gap
                if t >= duration:
                    return
                if u * lam_max > float(np.interp(t, grid, lam)):
                    continue  # thinning: accepted with probability rate(t) / max rate
                yield env.timeout(t - env._now)
                lock = subs[self.pyrng.randrange(len(subs))] if len(subs) > 1 else subs[0]
                env.process(self._phantom_hold(lock, hold()))

    def _phantom_hold(self, lock: Pool, hold: float) -> Generator:
        ev = lock.acquire()
        if ev is not None:
            yield ev
        yield self.env.timeout(hold)
        lock.release()

    def run_closed(self, users: int, think: Distribution, weights: np.ndarray,
                   duration: float) -> RunOutput:
        """Simulate ``users`` closed-loop users (think, request, repeat) for ``duration`` s."""
        th = self._sampler(think)
        for u in range(users):
            sub = np.random.default_rng(self.rng.integers(0, 2**63))
            self.env.process(self._closed_user(u, th, weights, duration, sub))
        return self._run(duration)

    def _run(self, duration: float) -> RunOutput:
        for st, _ in self._series:
            if isinstance(st, Pool | PSCpu):
                st.waits = WaitHistogram(duration)
        self.env.process(self._sampler_proc(duration))
        self.env.run(until=duration)
        for st, ser in self._series:
            if getattr(st, "waits", None) is not None:
                ser.wait_counts = st.waits.counts()
        return RunOutput(
            deployment=self.topo.deployment,
            duration_s=duration,
            bin_s=self.bin_s,
            t=np.frombuffer(self._rec_t, dtype=np.float64).copy(),
            op=np.frombuffer(self._rec_op, dtype=np.int16).copy(),
            latency=np.frombuffer(self._rec_lat, dtype=np.float64).copy(),
            error=np.frombuffer(self._rec_err, dtype=np.int8).astype(bool),
            stations=[ser for _, ser in self._series],
        )
