"""Online players and their arrivals, for millions of players without a process per player.

The online population is a structure of arrays (:class:`OnlinePool`): a fixed number of
*slots* (as many as the most players online at any time of the window), each with an activity
weight, the cumulative weights for O(log n) weighted draws and the player currently in it.
At window time ``t`` the first ``n(t) = rint(online_count(t) / K)`` slots are online. Behind
the slots waits a ring of *spare* players (offline players of the partition).

Sessions: every slot carries a Poisson clock of rate ``1 / mean_session``. A tick while the
slot is online ends its player's session and starts a new one with the next spare player, so
each session lasts an exponential time of mean ``mean_session_minutes`` (memoryless: the
players online at the start of the window are stationary too), turnover runs at
``online(t) / mean_session`` per second, and the online count still follows the 24-h curve
exactly. A slot switched on as the curve rises starts a session with the next spare player; a
slot switched off as the curve falls ends its player's session early (that player stays
parked in the slot, offline, and goes back to the ring when the slot next comes on).

Approximations, all documented where they are made:

* the leaving player goes to the tail of its ring (first in, first out), so it comes back
  only after as many session starts of its class as the ring holds: never within the window
  unless the ring wraps. The ring is sized for the window's expected session starts (with a
  margin), capped at 16 bytes a slot or 16 MiB, whichever is larger, and by the partition's
  registered players; a long window, or a registered population barely larger than the
  online one, recycles players;
* whales and ordinary players have separate rings, so a slot keeps its weight forever (the
  cumulative weights never change) and a whale is replaced by a whale;
* an arrival at time ``t`` in slot ``s`` goes to the player whose session in ``s`` covers
  ``t``; arrivals and session events of a chunk are matched on ``slot + time`` in float64
  (exact unless two of them are closer than about 1e-9 of the chunk).

:class:`ArrivalStream` superposes every operation's non-homogeneous Poisson stream and
generates it chunk by chunk by thinning, each arrival carrying its operation, the player
(drawn by weight from the online slots, whales more often) and a stake.

Common random numbers: a stream depends only on the scenario's population and operations and
on its generator, never on a deployment. The engine builds one ``ArrivalStream`` per
replication seed and feeds that same stream (rebuilt from the same seed) to every
architecture, so architectures are compared on identical arrivals and player draws.

Reduced runs: ``partition=(k, K)`` represents the players whose ``id % K == k``. Its slots and
spares are drawn directly from those ids (1/K of the online players), its rates and its
turnover are 1/K of the total, so a reduced run costs 1/K of a full one while each
represented player keeps its full individual activity (two bets on one balance still happen).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from sim.model.op_schedule import OpScheduler
from sim.model.scenario import Population, Scenario

DAY_S = 86_400.0
HOUR_S = 3_600.0
SPARE_BYTES_PER_SLOT = 16  # the spare rings may take this much per slot ...
SPARE_BYTES_FLOOR = 16 * 2**20  # ... or this much in all, whichever is larger


def online_count(population: Population, t_day_s: float | np.ndarray) -> float | np.ndarray:
    """Players online at a time of day (seconds since midnight, wrapping at 24 h).

    ``peak_online`` times the hourly share, linear between hourly points (hour h's share
    applies at h:00).
    """
    curve = np.asarray(population.online_curve, dtype=np.float64)
    h = np.mod(np.asarray(t_day_s, dtype=np.float64), DAY_S) / HOUR_S
    i = np.floor(h).astype(np.int64) % 24
    frac = h - np.floor(h)
    share = curve[i] * (1.0 - frac) + curve[(i + 1) % 24] * frac
    out = population.peak_online * share
    return float(out) if np.ndim(out) == 0 else out


def max_online(population: Population, start_day_s: float, duration_s: float) -> float:
    """The largest ``online_count`` over ``[start_day_s, start_day_s + duration_s]``.

    The curve is piecewise linear, so the maximum is at an end of the window or at an hour
    boundary inside it.
    """
    end = start_day_s + duration_s
    first = math.ceil(start_day_s / HOUR_S) * HOUR_S
    points = [start_day_s, end]
    points += list(np.arange(first, end, HOUR_S)[:25])  # the curve repeats every 24 h
    return float(np.max(online_count(population, np.asarray(points))))


def sample_distinct(rng: np.random.Generator, space: int, n: int) -> np.ndarray:
    """``n`` distinct integers of ``[0, space)`` in random order, uniformly, as int64.

    Memory is O(n), not O(space), unless ``n`` is a large share of ``space`` (then a
    permutation of the space costs at most 4 n).
    """
    if not 0 <= n <= space:
        raise ValueError(f"cannot draw {n} distinct values from {space}")
    if n * 4 >= space:
        return rng.permutation(space)[:n].astype(np.int64)
    # Draws with replacement, deduplicated: the set of distinct values is, given its size,
    # a uniform random subset (by symmetry), so a random n of them is uniform too.
    found = _distinct(rng.integers(0, space, n + n // 8 + 16, dtype=np.int64))
    while found.size < n:
        more = rng.integers(0, space, 2 * (n - found.size) + 16, dtype=np.int64)
        found = _distinct(np.concatenate([found, more]))
    return rng.permutation(found)[:n]


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + compare: several times faster than np.unique here)."""
    s = np.sort(x)
    keep = np.ones(s.size, dtype=bool)
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


class OnlinePool:
    """Slots of online players as arrays, and the ring of spare players behind them.

    Slots: ``player_id`` (int64, the player in the slot now), ``weight`` (float32, fixed per
    slot) and ``cum_weight`` (float64). The first ``online_n`` slots are the online ones.
    Whales (a ``whales.share`` of the players) carry weight ``whales.activity_multiplier``,
    everyone else 1.

    Spares: offline players waiting for a session, in two first-in-first-out rings (weight > 1,
    the whales, and the rest), stored as uint32 when every id fits, else int64.
    :meth:`start_sessions` takes the head of the slot's ring into the slot and puts the
    leaving player at the tail, so no player is ever in two places and a player who leaves
    comes back only after as many session starts of its class as its ring holds. A slot keeps
    its weight: its new player comes from the ring of its class (a pool with more than two
    weight values keeps each slot's weight whatever the spare's). A class without spares
    starts each new session with the same player.
    """

    __slots__ = ("_head", "_spare", "_spare_weight", "cum_weight", "player_id", "started",
                 "weight")

    def __init__(self, player_id: np.ndarray, weight: np.ndarray,
                 spare_id: np.ndarray | None = None,
                 spare_weight: np.ndarray | None = None) -> None:
        if player_id.shape != weight.shape or player_id.ndim != 1 or player_id.size == 0:
            raise ValueError("player_id and weight must be equal-length, non-empty 1-D arrays")
        self.player_id: np.ndarray = np.array(player_id, dtype=np.int64)  # a copy: mutated
        self.weight: np.ndarray = np.ascontiguousarray(weight, dtype=np.float32)
        # float64: a float32 running sum over a million weights would lose the unit steps.
        self.cum_weight: np.ndarray = np.cumsum(self.weight, dtype=np.float64)
        if spare_id is None:
            spare_id = np.empty(0, dtype=np.int64)
        if spare_weight is None:
            spare_weight = np.ones(spare_id.shape, dtype=np.float32)
        spare_id = np.asarray(spare_id)
        spare_weight = np.asarray(spare_weight)
        if spare_id.shape != spare_weight.shape or spare_id.ndim != 1:
            raise ValueError("spare_id and spare_weight must be equal-length 1-D arrays")
        everyone = np.concatenate([self.player_id, spare_id.astype(np.int64)])
        fits = everyone.size == 0 or (everyone.min() >= 0 and everyone.max() < 2**32)
        dtype = np.uint32 if fits else np.int64
        whale = spare_weight > 1
        self._spare: list[np.ndarray] = [spare_id[~whale].astype(dtype),
                                         spare_id[whale].astype(dtype)]
        # What members() reports for each ring: 1 and the (largest) whale spare's weight.
        self._spare_weight = (np.float32(1.0),
                              np.float32(spare_weight[whale].max()) if whale.any() else
                              np.float32(1.0))
        self._head: list[int] = [0, 0]
        self.started: int = 0  # sessions started by start_sessions so far

    @classmethod
    def build(cls, population: Population, rng: np.random.Generator, size: int,
              partition: tuple[int, int] = (0, 1), spare: int = 0) -> OnlinePool:
        """Draw ``size`` slot players and ``spare`` spares, all distinct, of the partition.

        The partition ``(k, K)`` holds the ids ``k + K j``; ``size`` is cut to its players
        and ``spare`` to those left over. Each player is a whale with probability
        ``whales.share``.
        """
        k, parts = partition
        space = (population.registered_players - k + parts - 1) // parts
        size = max(1, min(size, space))
        spare = max(0, min(spare, space - size))
        ids = k + parts * sample_distinct(rng, space, size + spare)
        whales = rng.random(size + spare) < population.whales.share
        weight = np.where(whales, np.float32(population.whales.activity_multiplier),
                          np.float32(1.0)).astype(np.float32)
        return cls(ids[:size], weight[:size], ids[size:], weight[size:])

    @property
    def size(self) -> int:
        """Slots in the pool (the most players ever online in the window)."""
        return int(self.player_id.size)

    @property
    def spare_size(self) -> int:
        """Spare players waiting in the rings."""
        return int(self._spare[0].size + self._spare[1].size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool's arrays (slots and spares)."""
        return int(self.player_id.nbytes + self.weight.nbytes + self.cum_weight.nbytes
                   + self._spare[0].nbytes + self._spare[1].nbytes)

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """Every player the pool holds (slots, then spares) and its weight, as int64/float32.

        The set never changes (sessions only move players between slots and rings). A player
        in a slot has the slot's weight; a spare is reported with weight 1 if ordinary and
        the largest whale spare weight given at construction if a whale (exact for the two
        weight values of :meth:`build`).
        """
        ids = np.concatenate([self.player_id, self._spare[0].astype(np.int64),
                              self._spare[1].astype(np.int64)])
        weight = np.concatenate([self.weight,
                                 np.full(self._spare[0].size, self._spare_weight[0]),
                                 np.full(self._spare[1].size, self._spare_weight[1])])
        return ids, weight

    def draw_slots(self, rng: np.random.Generator, n: int,
                   online_n: int | np.ndarray) -> np.ndarray:
        """``n`` slot indices (int64) weighted by activity among the first ``online_n`` slots.

        ``online_n`` is one count or one count per draw (clipped to ``1..size``).
        """
        m = np.clip(np.asarray(online_n, dtype=np.int64), 1, self.size)
        total = self.cum_weight[m - 1]
        u = rng.random(n) * total
        # Searching sorted keys walks the table in order (cache friendly, about 2x faster).
        order = np.argsort(u)
        idx = np.empty(n, dtype=np.int64)
        idx[order] = np.searchsorted(self.cum_weight, u[order], side="right")
        np.minimum(idx, m - 1, out=idx)  # guards u == total after rounding
        return idx

    def draw(self, rng: np.random.Generator, n: int,
             online_n: int | np.ndarray) -> np.ndarray:
        """``n`` player ids weighted by activity among the first ``online_n`` slots (now)."""
        return self.player_id[self.draw_slots(rng, n, online_n)]

    def start_sessions(self, slot: np.ndarray) -> np.ndarray:
        """Start one new session per entry of ``slot`` (int64, in time order); their players.

        Each start swaps the slot's player with the head of its class's ring (the leaving
        player goes to the tail). Returns the incoming player of each start, as int64; after
        the call ``player_id`` holds each slot's last incoming player.
        """
        slot = np.asarray(slot, dtype=np.int64)
        incoming = self.player_id[slot]  # kept for a class without spares
        whale = self.weight[slot] > 1
        for c, members in enumerate((~whale, whale)):
            idx = np.flatnonzero(members)
            ring = self._spare[c]
            if idx.size == 0 or ring.size == 0:
                continue
            for lo in range(0, idx.size, ring.size):  # a batch never reuses a ring entry
                part = idx[lo:lo + ring.size]
                incoming[part] = self._swap(c, slot[part])
        self.started += int(slot.size)
        return incoming

    def _swap(self, c: int, slot: np.ndarray) -> np.ndarray:
        """Starts in ``slot`` (time order, at most one ring's length) from ring ``c``."""
        ring = self._spare[c]
        head = self._head[c]
        pos = (head + np.arange(slot.size)) % ring.size
        incoming = ring[pos].astype(np.int64)
        order = np.argsort(slot, kind="stable")  # by slot, then time
        s = slot[order]
        inc = incoming[order]
        same = s[1:] == s[:-1]  # the previous start was in the same slot
        leaving = np.empty_like(inc)
        first = np.concatenate([[True], ~same])
        leaving[first] = self.player_id[s[first]]
        leaving[1:][same] = inc[:-1][same]  # who came in at the slot's previous start
        ring[pos[order]] = leaving.astype(ring.dtype)
        last = np.concatenate([~same, [True]])
        self.player_id[s[last]] = inc[last]
        self._head[c] = int((head + slot.size) % ring.size)
        return incoming


class ArrivalChunk(NamedTuple):
    """Arrivals of one chunk of time, sorted by time."""

    t: np.ndarray       # float64 seconds since the window start
    op: np.ndarray      # int16 index into list(scenario.operations)
    player: np.ndarray  # int64 player id
    amount: np.ndarray  # int64 stake in minor units (ignored by operations without one)


class ArrivalStream:
    """Superposed non-homogeneous Poisson arrivals of every operation over the window.

    Rate of operation ``o`` at window time ``t``: ``online_count(t) / K *
    actions_per_minute / 60 * weight_o / sum(weights) * (product of the multipliers of the
    spikes active at t that list o)``. Players turn over with exponential sessions of mean
    ``mean_session_minutes`` (see the module docstring). Same generator state, same stream.
    """

    def __init__(self, scenario: Scenario, rng: np.random.Generator,
                 partition: tuple[int, int] = (0, 1)) -> None:
        k, parts = partition
        if parts < 1 or not 0 <= k < parts:
            raise ValueError(f"partition must be (k, K) with 0 <= k < K, got {partition}")
        self.scenario = scenario
        self.rng = rng
        self.partition = (k, parts)
        pop = scenario.population
        self.population = pop
        self.duration_s = float(scenario.simulation.duration_s)
        self.start_day_s = float(scenario.simulation.start_hour) * HOUR_S
        self.op_names: list[str] = list(scenario.operations)
        w = np.array([op.weight for op in scenario.operations.values()], dtype=np.float64)
        self.op_share: np.ndarray = w / w.sum()
        self._cum_share: np.ndarray = np.cumsum(self.op_share)
        self._last_op = int(np.flatnonzero(w > 0)[-1])  # rounding never picks a 0-weight op
        self.per_player_rate = pop.session.actions_per_minute / 60.0
        self.mean_session_s = pop.session.mean_session_minutes * 60.0
        self._spikes = [
            (sp.start_s, sp.start_s + sp.duration_s, sp.multiplier,
             np.array([(sp.operations is None) or (o in sp.operations) for o in self.op_names]))
            for sp in pop.spikes
        ]
        size = math.ceil(max_online(pop, self.start_day_s, self.duration_s) / parts)
        self.pool = OnlinePool.build(pop, rng, size, self.partition,
                                     spare=self._spare_needed(size))
        # Each slot's Poisson clock: the next tick (session end) in window seconds.
        self._session_end: np.ndarray = rng.standard_exponential(self.pool.size)
        self._session_end *= self.mean_session_s
        self._touched: np.ndarray = np.zeros(self.pool.size, dtype=bool)  # scratch, per chunk
        self._renewal_cum = 0.0                 # every-k-th streams: cumulative rate so far
        self._renewal_next: float | None = None  # ... and the next kept arrival on that scale
        self._scheduler: OpScheduler | None = None  # ... and their operations

    def _spare_needed(self, size: int) -> int:
        """Spare players for ``size`` slots: the window's expected session starts, +25% + 64.

        At most 16 bytes a slot or 16 MiB, whichever is larger (4 spares a slot, or 4 Mi
        spares, with 32-bit ids; half as many with larger ids): bounded, whatever the
        registered population. Past that the rings wrap and players come back.
        """
        per_spare = 4 if self.population.registered_players <= 2**32 else 8
        want = math.ceil(1.25 * self.sessions_started(0.0, self.duration_s)) + 64
        return min(want, max(SPARE_BYTES_PER_SLOT * size, SPARE_BYTES_FLOOR) // per_spare)

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool, the session clocks and a scratch mask (independent of the
        registered players)."""
        return self.pool.nbytes + int(self._session_end.nbytes + self._touched.nbytes)

    # ------------------------------------------------------------------ rates

    def online_n(self, t: float | np.ndarray) -> np.ndarray:
        """Online players of the partition at window time ``t`` (online slots)."""
        n = online_count(self.population, self.start_day_s + np.asarray(t, dtype=np.float64))
        return self._pool_entries(np.asarray(n))

    def _pool_entries(self, online: np.ndarray) -> np.ndarray:
        """Online slots given the whole population's online count."""
        n = np.rint(online / self.partition[1])
        return np.clip(n, 1, self.pool.size).astype(np.int64)

    def _multipliers(self, t: np.ndarray) -> np.ndarray:
        """Spike multiplier per (time, operation), shape ``t.shape + (n_ops,)``."""
        mult = np.ones((*t.shape, len(self.op_names)), dtype=np.float64)
        for start, end, m, ops in self._spikes:
            active = (t >= start) & (t < end)
            mult[active[..., None] & ops] *= m
        return mult

    def rate(self, t: float | np.ndarray) -> np.ndarray:
        """Expected arrivals per second of each operation at window time ``t``.

        Shape ``(n_ops,)`` for a scalar ``t``, ``t.shape + (n_ops,)`` for an array.
        """
        ta = np.asarray(t, dtype=np.float64)
        base = online_count(self.population, self.start_day_s + ta)
        base = np.asarray(base) * (self.per_player_rate / self.partition[1])
        return base[..., None] * self.op_share * self._multipliers(ta)

    def sessions_started(self, t0: float, t1: float) -> float:
        """Expected sessions starting in window time ``[t0, t1)``, of the partition.

        Turnover ``∫ online(t) / K / mean_session dt`` plus the growth of the online count
        (the sum of its rises; falls end sessions, they start none). Like :meth:`rate`, 1/K of
        the whole system's for a partition ``(k, K)``.
        """
        if t1 <= t0:
            return 0.0
        p = self._breakpoints(t0, t1)
        v = np.asarray(online_count(self.population, self.start_day_s + p)) / self.partition[1]
        turnover = float(np.sum((v[1:] + v[:-1]) * np.diff(p))) / 2.0 / self.mean_session_s
        return turnover + float(np.sum(np.maximum(np.diff(v), 0.0)))

    def _breakpoints(self, a: float, b: float) -> np.ndarray:
        """``a``, the hour boundaries strictly inside ``(a, b)``, ``b``: the online count is
        linear between consecutive points."""
        first = math.floor((self.start_day_s + a) / HOUR_S + 1.0) * HOUR_S - self.start_day_s
        inner = np.arange(first, b, HOUR_S)
        return np.concatenate([[a], inner[inner > a], [b]])

    def _rate_bound(self, a: float, b: float) -> float:
        """An upper bound of the total rate over ``[a, b]``."""
        peak = max_online(self.population, self.start_day_s + a, b - a)
        mult = np.ones(len(self.op_names))
        for start, end, m, ops in self._spikes:
            if start < b and end > a and m > 1.0:
                mult[ops] *= m
        return peak * self.per_player_rate / self.partition[1] * float(self.op_share @ mult)

    # ------------------------------------------------------------------ sessions

    def _activations(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """Slots switched on in ``[a, b)`` as the online count rises, and when.

        On a linear piece from ``v0`` to ``v1 > v0`` (online players of the partition), slot
        ``s`` comes on where ``v`` crosses ``s + 0.5`` (``rint`` rounds up from there).
        """
        p = self._breakpoints(a, b)
        online = np.asarray(online_count(self.population, self.start_day_s + p))
        n = self._pool_entries(online)  # as online_n, so the draws agree
        v = online / self.partition[1]
        slots: list[np.ndarray] = []
        times: list[np.ndarray] = []
        for i in np.flatnonzero(n[1:] > n[:-1]):
            s = np.arange(n[i], n[i + 1], dtype=np.int64)
            at = p[i] + (s + 0.5 - v[i]) / (v[i + 1] - v[i]) * (p[i + 1] - p[i])
            slots.append(s)
            times.append(np.clip(at, p[i], np.nextafter(p[i + 1], -np.inf)))
        if not slots:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        return np.concatenate(slots), np.concatenate(times)

    def _renewals(self, b: float) -> tuple[np.ndarray, np.ndarray]:
        """Clock ticks before ``b`` of online slots, and when; advances every clock past ``b``.

        A tick of an offline slot starts nothing (its parked player is offline anyway); the
        clock runs on regardless, which memorylessness allows.
        """
        end = self._session_end
        pending = np.flatnonzero(end < b)
        slots: list[np.ndarray] = []
        times: list[np.ndarray] = []
        while pending.size:
            tick = end[pending]
            on = pending < self.online_n(tick)
            slots.append(pending[on])
            times.append(tick[on])
            end[pending] = tick + self.rng.standard_exponential(pending.size) * self.mean_session_s
            pending = pending[end[pending] < b]
        if not slots:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        return np.concatenate(slots), np.concatenate(times)

    def _assign_players(self, a: float, b: float, slot: np.ndarray,
                        t: np.ndarray) -> np.ndarray:
        """The player of each arrival (``slot``, time ``t`` in ``[a, b)``); runs the chunk's
        session starts, so ``pool.player_id`` holds the players in the slots at ``b``."""
        player = self.pool.player_id[slot]  # who was in the slot at a
        act_s, act_t = self._activations(a, b)
        ren_s, ren_t = self._renewals(b)
        ev_s = np.concatenate([act_s, ren_s])
        if ev_s.size == 0:
            return player
        ev_t = np.concatenate([act_t, ren_t])
        by_time = np.argsort(ev_t, kind="stable")
        ev_s, ev_t = ev_s[by_time], ev_t[by_time]
        ev_p = self.pool.start_sessions(ev_s)
        # Only arrivals in a slot with a start in this chunk (few) may change player.
        self._touched[ev_s] = True
        cand = np.flatnonzero(self._touched[slot])
        self._touched[ev_s] = False
        # The latest start in the arrival's slot at or before its time.
        by_slot = np.lexsort((ev_t, ev_s))
        ev_s, ev_p = ev_s[by_slot], ev_p[by_slot]
        span = b - a
        ev_key = ev_s * 2.0 + (ev_t[by_slot] - a) / span  # slot-major; fraction in [0, 1]
        s = slot[cand]
        i = np.searchsorted(ev_key, s * 2.0 + (t[cand] - a) / span, side="right") - 1
        ic = np.maximum(i, 0)
        hit = (i >= 0) & (ev_s[ic] == s)
        player[cand[hit]] = ev_p[ic[hit]]
        return player

    # ------------------------------------------------------------------ generation

    def _chunk(self, a: float, b: float) -> ArrivalChunk:
        rng = self.rng
        bound = self._rate_bound(a, b)
        n = int(rng.poisson(bound * (b - a))) if bound > 0 else 0
        # Sorted uniforms on [a, b) from normalised exponential spacings: O(n), no sort.
        e = np.cumsum(rng.standard_exponential(n + 1))
        t = a + (b - a) * (e[:-1] / e[-1])
        online = np.asarray(online_count(self.population, self.start_day_s + t))
        base = online * (self.per_player_rate / self.partition[1])
        # One uniform per candidate both thins and picks the operation: the candidate is
        # kept with probability rate(t)/bound, as operation o with probability rate_o/bound.
        u = rng.random(n) * bound
        return self._marked(a, b, t, online, base, u)

    def _marked(self, a: float, b: float, t: np.ndarray, online: np.ndarray, base: np.ndarray,
                u: np.ndarray) -> ArrivalChunk:
        """Candidates at ``t`` (in ``[a, b)``) with uniforms ``u`` scaled to a rate: kept as
        operation o with probability rate_o(t) / scale, then given a player and a stake."""
        if any(start < b and end > a for start, end, _, _ in self._spikes):
            cum = np.cumsum(base[:, None] * self.op_share * self._multipliers(t), axis=1)
            op = (cum <= u[:, None]).sum(axis=1)
            keep = op < len(self.op_names)
            op = op[keep]
        else:  # shares constant over the chunk: no per-operation matrix needed
            keep = u < base
            op = np.searchsorted(self._cum_share, u[keep] / base[keep], side="right")
            np.minimum(op, self._last_op, out=op)
        return self._players(a, b, t[keep], op.astype(np.int16), online[keep])

    def _players(self, a: float, b: float, t: np.ndarray, op: np.ndarray,
                 online: np.ndarray) -> ArrivalChunk:
        """Arrivals at ``t`` (in ``[a, b)``) of operations ``op``: a player and a stake each."""
        rng = self.rng
        slot = self.pool.draw_slots(rng, t.size, self._pool_entries(online))
        amount = self.population.bet_size.sample(rng, t.size)
        player = self._assign_players(a, b, slot, t)
        return ArrivalChunk(t, op, player, amount)

    def _every_kth_chunk(self, a: float, b: float, every: int) -> ArrivalChunk:
        """Every ``every``-th arrival of a stream ``every`` times denser, over ``[a, b)``.

        The dense stream (rate ``every`` x this stream's) is a time-changed unit Poisson
        process, so its every-``every``-th arrivals are a renewal process whose gaps, in
        units of this stream's cumulative rate, are Gamma(every, 1/every) (mean 1, CV^2
        1/every). Round-robin over R replicas gives each one every R-th request of the whole
        system; a partition of 1/k of the system fed this way (every = k) with R/k replicas
        gives its replicas exactly that stream. The kept arrivals' operations come from an
        :class:`~sim.model.op_schedule.OpScheduler`, so each operation's own arrivals are
        every k-th of its full-system stream too (what a replica of a service only some
        operations visit gets); players and stakes are drawn as for any arrival.
        """
        rng = self.rng
        # the cumulative rate on a grid fine enough for its curvature: online counts are
        # linear between hour breakpoints, spike multipliers constant between their edges
        edges = [e for sp in self._spikes for e in sp[:2] if a < e < b]
        grid = np.unique(np.concatenate([np.linspace(a, b, 9), self._breakpoints(a, b), edges]))
        mid = (grid[1:] + grid[:-1]) / 2.0
        total = self.rate(mid).sum(axis=-1)
        cum = np.concatenate([[self._renewal_cum], self._renewal_cum + np.cumsum(
            total * np.diff(grid))])
        if self._renewal_next is None:  # stationary start: a uniform phase of the Erlang gap
            self._renewal_next = float(rng.gamma(rng.integers(1, every + 1), 1.0 / every))
        marks: list[float] = []
        nxt = self._renewal_next
        while nxt < cum[-1]:
            marks.append(nxt)
            nxt += float(rng.gamma(every, 1.0 / every))
        self._renewal_next = nxt
        self._renewal_cum = float(cum[-1])
        t = np.interp(np.asarray(marks), cum, grid) if marks else np.empty(0)
        t = np.clip(t, a, np.nextafter(b, -np.inf))
        online = np.asarray(online_count(self.population, self.start_day_s + t))
        rates = self.rate(t).reshape(t.size, len(self.op_names))
        if self._scheduler is None or self._scheduler.k != every:
            self._scheduler = OpScheduler(len(self.op_names), every, rng)
        op = self._scheduler.assign(rates / rates.sum(axis=1, keepdims=True))
        return self._players(a, b, t, op, online)

    def chunks(self, chunk_s: float = 1.0, every: int = 1) -> Iterator[ArrivalChunk]:
        """Arrivals over ``[0, duration_s)`` chunk by chunk (bounded memory), in time order.

        Call once per stream: the chunks consume the stream's generator and move its
        sessions on. The same seed and ``chunk_s`` give the same arrivals; another
        ``chunk_s`` gives another sample of the same process. ``every > 1``: the same rates,
        but every ``every``-th arrival of a stream ``every`` times denser (a smoother
        renewal stream, see :meth:`_every_kth_chunk`) instead of a Poisson stream.
        """
        if chunk_s <= 0:
            raise ValueError("chunk_s must be positive")
        if every < 1:
            raise ValueError("every must be >= 1")
        self._renewal_cum, self._renewal_next, self._scheduler = 0.0, None, None
        n_chunks = math.ceil(self.duration_s / chunk_s)
        for i in range(n_chunks):
            a = i * chunk_s
            b = min((i + 1) * chunk_s, self.duration_s)
            if b > a:
                yield self._chunk(a, b) if every == 1 else self._every_kth_chunk(a, b, every)
