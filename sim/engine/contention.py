"""Contention on written rows: per-player balance rows and hot accounts, both ways.

A step whose database work writes a row others write too (``player_row: true``, or a
``lock`` naming a hot account) runs as a *transaction* here, the way the reference back
office runs its money operations (``reference_impl/storage/sql_storage.py``,
``reference_impl/storage/script.py``):

* **pessimistic** (the reference's default): the row is locked for the transaction's database
  time (``SELECT ... FOR UPDATE`` of the player, the in-place update of a hot account), so
  concurrent writers of the same row queue on it. A player's row lock lives in the lazy
  :class:`RowLockTable`; a hot account's sub-accounts are :class:`~sim.engine.stations.Pool`
  row locks of capacity one. Rows are taken in one order (the player's, then the hot
  account's), so there is no deadlock.
* **optimistic**: no lock; the transaction reads the row's version when it starts its database
  work and checks it at commit (``UPDATE ... WHERE version = $v``). A loser (someone committed
  the row since its read) aborts: its database work is wasted, its connection goes back to the
  pool, it backs off (full jitter, ``U(0, min(cap, base * 2^min(n, 7)))``, as
  ``sql_storage._backoff``) and retries from the connection; after ``max_attempts`` it gives up
  and the request fails (the reference raises "gave up after 50 attempts").

A commit is the instant the database work ends (the model does not split the script into the
version-checked update and the inserts after it). Within one step, locks are taken before
versions are read: a step that locks a hot account and version-checks the player's row sees
the player's row move only through writers not behind the same lock (model the reference's
read-then-update order with two steps). Memory is bounded by the requests in flight:
a player's lock exists only while some request holds it, a row's version entry only while some
transaction has read it (:class:`RowLockTable`, :class:`VersionTable`, both asserted).

Per operation the model counts transactions, aborts, retries, give-ups and the time lost to
them (wasted database work plus backoff), and records every transaction's lock wait in a
:class:`~sim.engine.waits.WaitHistogram`; all per segment of the run so the warm-up can be
dropped (:class:`ContentionStats`).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from simpy.events import Event

from sim.engine.stations import DEFAULT_QUEUE_LIMIT, REJECTED, Pool, PSCpu
from sim.engine.waits import (
    WAIT_BUCKETS,
    WAIT_SEGMENTS,
    WaitHistogram,
    segment_index,
    wait_percentiles_ms,
)
from sim.model.topology import ConflictRetrySpec, StepSpec

PHANTOM_LIMIT = DEFAULT_QUEUE_LIMIT
"""Optimistic phantom writers in flight at most (beyond, a new one is dropped)."""
BACKOFF_DOUBLINGS = 7
"""The backoff doubles at most this many times (``2 ** min(n, 7)``, as the reference)."""

# columns of ContentionStats.counts
TX, ABORTS, RETRIES, GAVE_UP, LOST_S = range(5)
COUNT_FIELDS = ("transactions", "aborts", "retries", "gave_up", "lost_s")


class RowLockTable:
    """Exclusive locks on rows named by a key (a player id), created when first taken and
    dropped when released with nobody waiting: no object for an idle player.

    Station interface (``name``, ``kind``, ``servers``, ``snapshot``): busy = rows held,
    queue = waiters, completions = releases; each grant's wait goes to ``waits``. At most
    ``bound`` rows are held or waited for at once (every holder and waiter holds a database
    connection; asserted), so memory follows the requests in flight.
    """

    __slots__ = ("_last", "_rows", "_since", "area_busy", "area_queue", "bound", "completions",
                 "env", "held", "kind", "name", "waiting", "waits")

    def __init__(self, env: simpy.Environment, name: str, bound: int):
        self.env = env
        self.name = name
        self.kind = "row_lock"
        self.bound = bound
        self._rows: dict[int, deque[Event] | None] = {}  # row -> waiters (None: none yet)
        self._since: dict[Event, float] = {}
        self.held = 0
        self.waiting = 0
        self.area_busy = 0.0
        self.area_queue = 0.0
        self.completions = 0
        self._last = 0.0
        self.waits: WaitHistogram | None = None

    @property
    def servers(self) -> int:
        return 0  # one per row, rows unbounded: no utilisation

    def __len__(self) -> int:
        """Rows locked now (memory held by the table)."""
        return len(self._rows)

    def _account(self) -> None:
        now = self.env.now
        dt = now - self._last
        if dt > 0.0:
            self.area_busy += self.held * dt
            self.area_queue += self.waiting * dt
            self._last = now

    def acquire(self, row: int) -> Event | None:
        """Lock ``row``: ``None`` when granted at once, else an event granted in FIFO order."""
        self._account()
        rows = self._rows
        if row not in rows:
            rows[row] = None
            self.held += 1
            assert len(rows) <= self.bound, f"{self.name}: more rows than {self.bound}"
            if self.waits is not None:
                self.waits.record(self.env.now, 0.0)
            return None
        q = rows[row]
        if q is None:
            q = rows[row] = deque()
        ev = Event(self.env)
        q.append(ev)
        self.waiting += 1
        assert self.waiting + self.held <= self.bound, f"{self.name}: over {self.bound} waiters"
        self._since[ev] = self.env.now
        return ev

    def release(self, row: int) -> None:
        """Unlock ``row``, handing it to its first waiter, or dropping it if none."""
        self._account()
        self.completions += 1
        q = self._rows[row]
        if q:
            ev = q.popleft()
            self.waiting -= 1
            now = self.env.now
            since = self._since.pop(ev)
            if self.waits is not None:
                self.waits.record(now, now - since)
            ev.succeed()
            return
        del self._rows[row]
        self.held -= 1

    def snapshot(self) -> tuple[float, float, int]:
        self._account()
        return self.area_busy, self.area_queue, self.completions


class VersionTable:
    """Versions of rows under optimistic concurrency, kept only while someone has read them.

    ``read`` registers a reader and returns the commits seen so far; ``moved`` says whether
    the row was committed since; ``commit`` counts a commit; ``forget`` ends a read (the
    entry goes when its last reader leaves, so the table holds at most the transactions in
    flight: ``bound``, asserted). Only commits while a reader is present matter to it, so
    counting from zero per entry is exact.
    """

    __slots__ = ("_rows", "bound", "name")

    def __init__(self, name: str, bound: int):
        self.name = name
        self.bound = bound
        self._rows: dict[Any, list[int]] = {}  # row -> [readers, commits]

    def __len__(self) -> int:
        return len(self._rows)

    def read(self, row: Any) -> int:
        e = self._rows.get(row)
        if e is None:
            e = self._rows[row] = [0, 0]
            assert len(self._rows) <= self.bound, f"{self.name}: more rows than {self.bound}"
        e[0] += 1
        return e[1]

    def moved(self, row: Any, seen: int) -> bool:
        return self._rows[row][1] != seen

    def commit(self, row: Any) -> None:
        self._rows[row][1] += 1

    def forget(self, row: Any) -> None:
        e = self._rows[row]
        e[0] -= 1
        if e[0] == 0:
            del self._rows[row]


class ContentionStats:
    """Per operation and segment of the run: transactions, aborts, retries, give-ups, time
    lost (wasted database work and backoff), and each transaction's lock wait."""

    __slots__ = ("_seg_s", "counts", "duration", "waits")

    def __init__(self, n_ops: int, duration: float):
        self.duration = duration
        self._seg_s = duration / WAIT_SEGMENTS
        self.counts = np.zeros((WAIT_SEGMENTS, n_ops, len(COUNT_FIELDS)))
        self.waits: list[WaitHistogram | None] = [None] * n_ops

    def add(self, now: float, op: int, field: int, value: float = 1.0) -> None:
        self.counts[segment_index(now, self._seg_s), op, field] += value

    def wait(self, now: float, op: int, wait: float) -> None:
        h = self.waits[op]
        if h is None:
            h = self.waits[op] = WaitHistogram(self.duration)
        h.record(now, wait)

    def output(self) -> ContentionOutput:
        n_ops = self.counts.shape[1]
        waits = np.zeros((n_ops, WAIT_SEGMENTS, WAIT_BUCKETS), dtype=np.int64)
        for op, h in enumerate(self.waits):
            if h is not None:
                waits[op] = h.counts()
        return ContentionOutput(self.counts.copy(), waits)


CONTENTION_METRICS = ("lock_wait_p50_ms", "lock_wait_p99_ms", "aborts_per_request",
                      "retries_per_request", "gave_up_per_request", "lost_ms_per_request")
"""Per-operation contention estimates of one replication (summary columns, each with a
``_ci``): lock wait percentiles per transaction (one contended database step of a request:
the waits of all its attempts, zero waits included; NaN when the operation took no lock),
then per request of the operation the aborts, retries, give-ups (failed requests) and the
time lost to aborts (wasted database work plus backoff)."""


@dataclass
class ContentionOutput:
    """What a run says about contention: ``counts[segment, op, field]`` (fields
    :data:`COUNT_FIELDS`) and ``waits[op]`` (lock-wait histogram counts per segment)."""

    counts: np.ndarray
    waits: np.ndarray

    def per_operation(self, op: int, first_segment: int, requests: int) -> dict[str, float]:
        """:data:`CONTENTION_METRICS` of operation ``op`` from segment ``first_segment`` on
        (after the warm-up), ``requests`` being the operation's requests that arrived in those
        segments; NaN for an operation without contended transactions."""
        c = self.counts[first_segment:, op].sum(axis=0)
        if c[TX] <= 0 or requests <= 0:
            return dict.fromkeys(CONTENTION_METRICS, math.nan)
        p50, p99 = wait_percentiles_ms(self.waits[op], first_segment)
        return {
            "lock_wait_p50_ms": p50,
            "lock_wait_p99_ms": p99,
            "aborts_per_request": c[ABORTS] / requests,
            "retries_per_request": c[RETRIES] / requests,
            "gave_up_per_request": c[GAVE_UP] / requests,
            "lost_ms_per_request": c[LOST_S] / requests * 1000.0,
        }


Connect = Callable[[Pool, Any], Generator[Event, Any, bool]]
DbCpu = Callable[[Any, int], PSCpu]


class Contention:
    """Row locks and version checks of one deployment's run; transactions go through
    :meth:`transact`, phantom writers of a reduced run through :meth:`phantom`."""

    def __init__(self, env: simpy.Environment, locks: list[list[Pool]], optimistic: list[bool],
                 retry: ConflictRetrySpec, n_ops: int, bound: int, pyrng: random.Random):
        self.env = env
        self.locks = locks
        self.lock_optimistic = optimistic
        self.retry = retry
        self.pyrng = pyrng
        self.players = RowLockTable(env, "rows:player", bound)
        self.player_versions = VersionTable("versions:player", bound)
        # keyed by sub-account: never more entries than sub-accounts
        self.hot_versions = [VersionTable(f"versions:hot{i}", len(subs))
                             for i, subs in enumerate(locks)]
        self.phantoms = 0  # optimistic phantom writers in flight (at most PHANTOM_LIMIT)
        self.stats: ContentionStats | None = None
        self.n_ops = n_ops

    def start(self, duration: float) -> None:
        """Count from now on, for a run of ``duration`` seconds."""
        self.stats = ContentionStats(self.n_ops, duration)
        self.players.waits = WaitHistogram(duration)

    def output(self) -> ContentionOutput:
        """The run's counts and lock-wait histograms per operation."""
        assert self.stats is not None, "Contention.start() not called"
        return self.stats.output()

    def backoff(self, attempt: int) -> float:
        """Full-jitter backoff before retry number ``attempt`` (0 = the first retry)."""
        r = self.retry
        span = min(r.backoff_cap_s, r.backoff_base_s * (1 << min(attempt, BACKOFF_DOUBLINGS)))
        return span * self.pyrng.random()

    def transact(self, step: Any, key: int, player: int, pool: Pool, connect: Connect,
                 db_cpu: DbCpu) -> Generator[Event, Any, bool]:
        """The database work of ``step`` (a ``path.PreparedStep``: its ``spec``, ``op``,
        ``svc`` and ``db`` draw) as a transaction on its rows, for the request of ``key``.
        The connection of ``pool`` is held on entry and released on return. ``False``: it
        failed (gave up after its attempts, or no connection for a retry within the pool's
        timeout)."""
        env = self.env
        stats = self.stats
        assert stats is not None, "Contention.start() not called"
        spec: StepSpec = step.spec
        op = step.op
        player_mode = spec.player_row
        lock_i = spec.lock
        hot_opt = lock_i is not None and self.lock_optimistic[lock_i]
        hot = self.hot_versions[lock_i] if lock_i is not None and hot_opt else None
        locking = player_mode == "pessimistic" or (lock_i is not None and not hot_opt)
        attempt = 0
        waited = 0.0
        stats.add(env.now, op, TX)
        while True:
            t0 = env.now
            if player_mode == "pessimistic":
                ev = self.players.acquire(player)
                if ev is not None:
                    yield ev
            lock = None
            sub = 0
            if lock_i is not None:
                subs = self.locks[lock_i]
                sub = self.pyrng.randrange(len(subs)) if len(subs) > 1 else 0
                if not hot_opt:
                    lock = subs[sub]
                    lev = lock.acquire()
                    if lev is not None:
                        assert lev is not REJECTED, f"{lock.name}: lock queue over its bound"
                        yield lev
            waited += env.now - t0
            pv = self.player_versions.read(player) if player_mode == "optimistic" else 0
            hv = hot.read(sub) if hot is not None else 0
            started = env.now
            yield db_cpu(step, player).serve(step.db(key))
            if step.sync_s:  # synchronous replication: the commit waits for the replica
                yield env.timeout(step.sync_s)
            moved = False
            if player_mode == "optimistic":
                moved = self.player_versions.moved(player, pv)
            if hot is not None and not moved:
                moved = hot.moved(sub, hv)
            if player_mode == "optimistic":
                if not moved:
                    self.player_versions.commit(player)
                self.player_versions.forget(player)
            if hot is not None:
                if not moved:
                    hot.commit(sub)
                hot.forget(sub)
            if lock is not None:
                lock.release()
            if player_mode == "pessimistic":
                self.players.release(player)
            pool.release()
            if not moved:
                if locking:
                    stats.wait(env.now, op, waited)
                return True
            now = env.now
            stats.add(now, op, ABORTS)
            stats.add(now, op, LOST_S, now - started)
            attempt += 1
            if attempt >= self.retry.max_attempts:
                stats.add(now, op, GAVE_UP)
                if locking:
                    stats.wait(now, op, waited)
                return False
            stats.add(now, op, RETRIES)
            pause = self.backoff(attempt - 1)
            if pause > 0.0:
                yield env.timeout(pause)
                stats.add(env.now, op, LOST_S, pause)
            if not (yield from connect(pool, step.svc)):
                if locking:
                    stats.wait(env.now, op, waited)
                return False  # no connection for the retry within the pool's timeout

    def phantom(self, lock_i: int, sub: int, hold: float) -> Generator[Event, Any, None]:
        """A phantom writer (another partition's, in a reduced run) of sub-account ``sub`` of
        hot account ``lock_i``: holds its lock for ``hold`` seconds (pessimistic; dropped if
        the lock's queue is full), or reads its version, works ``hold`` seconds and commits,
        backing off and retrying on a conflict like any transaction (optimistic)."""
        env = self.env
        if not self.lock_optimistic[lock_i]:
            lock = self.locks[lock_i][sub]
            ev = lock.acquire()
            if ev is REJECTED:
                return
            if ev is not None:
                yield ev
            yield env.timeout(hold)
            lock.release()
            return
        if self.phantoms >= PHANTOM_LIMIT:
            return  # as a pessimistic phantom finding the lock's queue full: dropped
        self.phantoms += 1
        versions = self.hot_versions[lock_i]
        for attempt in range(self.retry.max_attempts):
            seen = versions.read(sub)
            yield env.timeout(hold)
            moved = versions.moved(sub, seen)
            if not moved:
                versions.commit(sub)
            versions.forget(sub)
            if not moved:
                break
            pause = self.backoff(attempt)
            if pause > 0.0:
                yield env.timeout(pause)
        self.phantoms -= 1
