"""Stations: where requests wait and are served.

Every station offers the same small interface (:class:`Station`): a ``name``, a ``kind``, a
number of ``servers`` and ``snapshot()``, the cumulative (busy, queue, completions) time
integrals the output is built from. Three mechanisms cover every station of a deployment:

* :class:`Pool`: a counted resource with a FIFO queue (a replica's worker pool, its database
  connection pool, a hot account's row lock);
* :class:`PSCpu`: cores shared by processor sharing (a replica's CPU, a database shard or
  read replica, a cache server);
* :class:`Backlog`: the broker, counting messages published and not yet consumed.

Every queue is bounded, and says what happens when full:

* a worker pool's queue holds at most the service's ``queue_limit`` (scenario field), or
  :data:`DEFAULT_QUEUE_LIMIT`; beyond it ``acquire`` answers :data:`REJECTED` and the request
  fails at once (HTTP 503);
* a connection pool's queue is bounded by construction: every waiter holds one of the
  service's workers; a lock's queue likewise holds at most one waiter per database
  connection, plus phantom writers bounded by :data:`DEFAULT_QUEUE_LIMIT` (dropped when full);
* a processor-sharing station never holds more jobs than the workers (or connections) that
  can reach it (``max_jobs``, asserted);
* the broker holds at most :data:`BROKER_MAX_BACKLOG` messages; beyond it a publish is
  refused and the request fails.

The clock is read through SimPy's public ``env.now``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Protocol

import simpy
from simpy.events import Event

from sim.engine.host import EntryMeter, Host, RateMeter
from sim.engine.waits import WaitHistogram

DEFAULT_QUEUE_LIMIT = 1_000_000  # waiters per pool when the scenario sets no queue_limit
PRIORITY_NORMAL = 1              # sim.model.policies.PRIORITIES["normal"]
BROKER_MAX_BACKLOG = 1_000_000   # messages published and not yet consumed


class _Rejected:
    """Answer of :meth:`Pool.acquire` when the pool's queue is full."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REJECTED"


REJECTED = _Rejected()


class _Dead:
    """Value a waiter's event is granted with when its station died (a crash): fail."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEAD"


DEAD = _Dead()


class Station(Protocol):
    """What the engine's output needs of any station."""

    name: str
    kind: str

    @property
    def servers(self) -> int:
        """Servers (workers, connections, cores); 0 for the broker."""
        ...

    def snapshot(self) -> tuple[float, float, int]:
        """Cumulative (busy server-time, queue time, completions) up to now."""
        ...


class Pool:
    """A counted resource with a bounded FIFO queue: worker pool, connection pool or row lock.

    ``acquire`` answers ``None`` when a unit is free at once (no event is created),
    :data:`REJECTED` when ``limit`` requests already wait, else an event granted in FIFO
    order. Time integrals of busy units and of the queue are kept for utilisation and
    queue-length statistics.
    """

    __slots__ = (
        "_last", "_since", "area_busy", "area_queue", "busy", "capacity", "completions", "env",
        "kind", "limit", "meter", "name", "waiting", "waits",
    )

    def __init__(self, env: simpy.Environment, name: str, kind: str, capacity: int,
                 limit: int | None = None):
        self.env = env
        self.name = name
        self.kind = kind
        self.capacity = capacity
        self.limit = DEFAULT_QUEUE_LIMIT if limit is None else limit
        self.busy = 0
        self.waiting: deque[Event] = deque()
        self.area_busy = 0.0
        self.area_queue = 0.0
        self.completions = 0
        self._last = 0.0
        self.waits: WaitHistogram | None = None  # set by the engine for a run
        self._since: dict[Event, float] = {}     # waiting request -> when it started waiting
        self.meter: RateMeter | None = None      # counts requests entering (load-dependent CPU)

    @property
    def servers(self) -> int:
        return self.capacity

    def _account(self) -> None:
        now = self.env.now
        dt = now - self._last
        if dt > 0.0:
            self.area_busy += self.busy * dt
            self.area_queue += len(self.waiting) * dt
            self._last = now

    def acquire(self, priority: int = PRIORITY_NORMAL) -> Event | _Rejected | None:
        """Take a unit: ``None`` if granted at once, ``REJECTED`` if the queue is full, else
        an event granted in FIFO order (``priority`` matters to a :class:`PriorityPool`)."""
        self._account()
        if self.meter is not None:
            self.meter.tick(self.env.now)
        if self.busy < self.capacity:
            self.busy += 1
            if self.waits is not None:
                self.waits.record(self.env.now, 0.0)
            return None
        if len(self.waiting) >= self.limit:
            return REJECTED  # turned away before joining: no wait is recorded
        return self._wait()

    def _wait(self) -> Event:
        ev = Event(self.env)
        self.waiting.append(ev)
        if self.waits is not None:
            self._since[ev] = self.env.now
        return ev

    def acquire_unbounded(self) -> Event | None:
        """Like :meth:`acquire` for a caller whose queue is bounded elsewhere (a consumer
        whose message still counts in the broker's bounded backlog)."""
        self._account()
        if self.meter is not None:
            self.meter.tick(self.env.now)
        if self.busy < self.capacity:
            self.busy += 1
            if self.waits is not None:
                self.waits.record(self.env.now, 0.0)
            return None
        return self._wait()

    def cancel(self, ev: Event) -> None:
        """Withdraw a waiting request (timed out); a request already granted is released."""
        self._account()
        if ev.triggered:
            self.release()
        else:
            self.waiting.remove(ev)
            self._since.pop(ev, None)

    def fail_waiting(self) -> int:
        """Fault hook (a crash): every waiter is granted :data:`DEAD` (it fails, holding
        nothing); answers how many."""
        self._account()
        n = 0
        while self.waiting:
            ev = self.waiting.popleft()
            self._since.pop(ev, None)
            if not ev.triggered:
                ev.succeed(DEAD)
                n += 1
        return n

    def set_capacity(self, capacity: int) -> None:
        """Fault hook (a hang and its end): serve with ``capacity`` units from now on; units
        in use above it finish their work; freed ones go to the waiters in FIFO order."""
        self._account()
        self.capacity = capacity
        while self.busy < capacity and self.waiting:
            self.busy += 1
            self.completions -= 1  # release() counts a completion; none happened here
            self.release()

    def release(self) -> None:
        """Give a unit back, handing it to the first waiter if any."""
        self._account()
        self.completions += 1
        if self.busy > self.capacity:  # capacity lowered (a hang): this unit is gone
            self.busy -= 1
            return
        waiting = self.waiting
        while waiting:
            ev = waiting.popleft()
            if not ev.triggered:
                if self.waits is not None:
                    now = self.env.now
                    self.waits.record(now, now - self._since.pop(ev, now))
                ev.succeed()
                return
        self.busy -= 1

    def snapshot(self) -> tuple[float, float, int]:
        """Cumulative (busy-time, queue-time, completions) up to now."""
        self._account()
        return self.area_busy, self.area_queue, self.completions


class PriorityQueue:
    """Waiting requests by priority (0 first), arrival order within one; the ``deque``
    methods :class:`Pool` uses (``append`` takes the priority)."""

    __slots__ = ("n", "queues")

    def __init__(self, levels: int):
        self.queues: tuple[deque[Event], ...] = tuple(deque() for _ in range(levels))
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def append(self, ev: Event, priority: int = PRIORITY_NORMAL) -> None:
        self.queues[priority].append(ev)
        self.n += 1

    def popleft(self) -> Event:
        for q in self.queues:
            if q:
                self.n -= 1
                return q.popleft()
        raise IndexError("pop from an empty priority queue")

    def remove(self, ev: Event) -> None:
        for q in self.queues:
            if ev in q:
                q.remove(ev)
                self.n -= 1
                return
        raise ValueError("not waiting")


class PriorityPool(Pool):
    """A worker pool whose waiting requests are served by priority (high first), each
    priority with its own bound on the queue (``limits[p]``; ``None``: the pool's ``limit``):
    low priority is shed first under saturation. Every queue stays bounded by ``limit``."""

    __slots__ = ("limits",)

    def __init__(self, env: simpy.Environment, name: str, kind: str, capacity: int,
                 limit: int | None, limits: tuple[int | None, ...]):
        super().__init__(env, name, kind, capacity, limit)
        self.limits = tuple(self.limit if x is None else min(x, self.limit) for x in limits)
        self.waiting = PriorityQueue(len(self.limits))  # type: ignore[assignment]

    def acquire(self, priority: int = PRIORITY_NORMAL) -> Event | _Rejected | None:
        """Like :meth:`Pool.acquire`; a request is shed when ``limits[priority]`` wait, and
        waits behind every request of a higher priority."""
        self._account()
        if self.busy < self.capacity:
            self.busy += 1
            if self.waits is not None:
                self.waits.record(self.env.now, 0.0)
            return None
        if len(self.waiting) >= self.limits[priority]:
            return REJECTED
        ev = Event(self.env)
        self.waiting.append(ev, priority)
        if self.waits is not None:
            self._since[ev] = self.env.now
        return ev


PS_TOLERANCE = 1e-9
"""Relative slack (to the simulated clock) within which processor-sharing jobs finish together:
rounding of ``delay * rate`` leaves a few ulps; jobs this close are completed by one timer."""


class PSCpu:
    """Cores shared by processor sharing: n jobs on c cores each progress at min(1, c/n).

    Implemented with a virtual clock: each job finishes when the virtual time reaches its
    start plus its work, so one heap and one live timer serve the whole station. When the
    jobs can never outnumber the cores (``max_jobs <= cores``), each job is a plain timeout.
    At most ``max_jobs`` jobs are present (the workers or connections that reach the station).

    Two optional hooks (:mod:`sim.engine.host`): ``scale`` multiplies each job's work by a
    load-dependent factor (the replica's ``cpu_by_rate``); ``host`` is the machine whose cores
    this station shares with the deployment's other CPU stations: every job then also
    progresses at the host's speed (1, or host cores / cores wanted when oversubscribed).
    """

    __slots__ = (
        "_gen", "_heap", "_last", "_seq", "_speed", "_timer_rate1", "_timer_vt", "_vtime",
        "area_busy", "area_excess", "area_jobs",
        "completions", "cores", "env", "host", "kind", "max_jobs", "n", "name", "never_shares",
        "scale", "slow", "waits",
    )

    def __init__(self, env: simpy.Environment, name: str, kind: str, cores: int, max_jobs: int,
                 host: Host | None = None, scale: Callable[[float], float] | None = None):
        self.env = env
        self.name = name
        self.kind = kind
        self.cores = cores
        self.max_jobs = max_jobs
        self.host = host
        self.scale = scale
        self._speed = 1.0
        self.never_shares = max_jobs <= cores and host is None
        self.slow = 1.0   # demand multiplier (faults: slowdown, cold start); exact when 1
        if host is not None:
            host.members.append(self)
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

    @property
    def servers(self) -> int:
        return self.cores

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last
        if dt > 0.0:
            n = self.n
            if n:
                c = self.cores
                s = self._speed
                if n <= c:
                    self._vtime += dt * s
                    self.area_busy += n * dt * s
                else:
                    self._vtime += dt * c / n * s
                    self.area_busy += c * dt * s
                    self.area_excess += (n - c) * dt
                self.area_jobs += n * dt
            self._last = now

    def serve(self, work: float) -> Event:
        """An event that fires when ``work`` seconds of CPU (times ``slow``) have been given to
        this job."""
        work = work * self.slow
        if self.scale is not None:
            work *= self.scale(self.env.now)
        host = self.host
        if host is not None:
            return self._serve_on_host(host, work)
        self._advance()
        self.n += 1
        assert self.n <= self.max_jobs, f"{self.name}: more jobs than max_jobs={self.max_jobs}"
        if self.never_shares:
            if self.waits is not None:
                self.waits.record(self.env.now, 0.0)
            ev = self.env.timeout(work)
            ev.callbacks.append(self._done_plain)
            return ev
        ev = Event(self.env)
        finish = self._vtime + work
        heapq.heappush(self._heap, (finish, next(self._seq), ev, self.env.now, work))
        if self._timer_rate1 and self.n <= self.cores and 0.0 <= self._timer_vt <= finish:
            return ev  # still full speed and the earliest finish is unchanged: timer stays valid
        self._schedule()
        return ev

    def _serve_on_host(self, host: Host, work: float) -> Event:
        host.advance_all()
        self.n += 1
        assert self.n <= self.max_jobs, f"{self.name}: more jobs than max_jobs={self.max_jobs}"
        ev = Event(self.env)
        heapq.heappush(self._heap, (self._vtime + work, next(self._seq), ev, self.env.now, work))
        host.respeed(self, self.env.now)
        return ev

    def advance(self) -> None:
        """Bring the virtual time to now (the host calls it before the speed changes)."""
        self._advance()

    def set_speed(self, speed: float, force: bool) -> None:
        """The host's speed from now on; re-arm the timer when it moved (or ``force``)."""
        if force or speed != self._speed:
            self._speed = speed
            self._schedule()

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
        rate = (1.0 if full else self.cores / n) * self._speed
        if rate <= 0.0:  # the host is stalled: no job progresses until it runs again
            self._timer_vt = -1.0
            self._gen += 1
            return
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
        now = self.env.now
        slack = PS_TOLERANCE * max(1.0, now)
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
                waits.record(now, max(0.0, now - start - work))
            ev.succeed()
        if self.host is not None:
            self.host.advance_all()
            self.host.respeed(self, now)
        else:
            self._schedule()

    def snapshot(self) -> tuple[float, float, int]:
        """Cumulative (busy core-time, excess-jobs time, completions) up to now."""
        self._advance()
        return self.area_busy, self.area_excess, self.completions


class Backlog:
    """The broker: counts messages published and not yet taken by a consumer (bounded)."""

    __slots__ = ("_last", "area_busy", "area_queue", "backlog", "capacity", "completions", "down",
                 "env", "held", "hold_limit", "kind", "limit", "name")

    def __init__(self, env: simpy.Environment, name: str, limit: int = BROKER_MAX_BACKLOG):
        self.env = env
        self.name = name
        self.kind = "broker"
        self.capacity = 0
        self.limit = limit
        self.backlog = 0
        self.area_busy = 0.0
        self.area_queue = 0.0
        self.completions = 0
        self._last = 0.0
        self.down: Event | None = None  # an outage: fires when the broker is back
        self.held = 0                   # messages publishers keep during an outage
        self.hold_limit = 0             # at most this many, then publishers wait

    @property
    def servers(self) -> int:
        return 0

    def _account(self) -> None:
        now = self.env.now
        dt = now - self._last
        if dt > 0.0:
            self.area_queue += self.backlog * dt
            self._last = now

    def put(self) -> bool:
        """Accept a message; ``False`` (refused) when the backlog is full."""
        self._account()
        if self.backlog >= self.limit:
            return False
        self.backlog += 1
        return True

    def take(self) -> None:
        self._account()
        self.backlog -= 1
        self.completions += 1

    def snapshot(self) -> tuple[float, float, int]:
        self._account()
        return 0.0, self.area_queue, self.completions


@dataclass
class Replica:
    """One replica of a service: its workers, its cores and its connection pool.

    Fault state: ``down`` (dead: new requests fail at once), ``epoch`` (bumped by each crash:
    a request that entered in an earlier epoch failed with it, at ``crashed_at``)."""

    workers: Pool
    cpu: PSCpu
    db_pool: Pool | None
    down: bool = False
    epoch: int = 0
    crashed_at: float = 0.0


@dataclass
class Shard:
    """One database shard: the primary's cores and its read replicas' cores.

    Fault state: ``down`` (primary unavailable: database work fails), ``epoch`` (bumped by a
    failure: work in flight then fails), ``commits`` (recent write times, kept only when an
    asynchronous failover may lose them)."""

    cpu: PSCpu
    read_replicas: tuple[PSCpu, ...] = ()
    down: bool = False
    epoch: int = 0
    commits: deque[float] | None = None


@dataclass
class Stations:
    """Every station of one deployment, by role."""

    replicas: list[list[Replica]]      # per service
    shards: list[list[Shard]]          # per database
    locks: list[list[Pool]]            # per hot account: its sub-account row locks
    caches: list[list[PSCpu]]          # per cache: its shards
    broker: Backlog
    host: Host | None = None           # the machine every CPU station shares, if any
    entry: EntryMeter | None = None    # requests entering the deployment (rate-dependent only)
