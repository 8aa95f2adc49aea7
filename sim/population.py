"""Online players and their arrivals, for millions of players without a process per player.

The online population is a structure of arrays (:class:`OnlinePool`, about 20 bytes a player):
ids, activity weights and cumulative weights for O(log n) weighted draws. The pool holds the
most players online at any time of the simulated window, in random order; at time ``t`` the
first ``online_count(t)`` entries are the ones online.

:class:`ArrivalStream` superposes every operation's non-homogeneous Poisson stream and
generates it chunk by chunk by thinning, each arrival carrying its operation, the player
(drawn from the online players, whales more often) and a stake.

Common random numbers: a stream depends only on the scenario's population and operations and
on its generator, never on a deployment. The engine builds one ``ArrivalStream`` per
replication seed and feeds that same stream (rebuilt from the same seed) to every
architecture, so architectures are compared on identical arrivals and player draws.

Reduced runs: ``partition=(k, K)`` represents the players whose ``id % K == k``. Its pool is
drawn directly from those ids (1/K of the online players) and its rates are 1/K of the total,
so a reduced run costs 1/K of a full one while each represented player keeps its full
individual activity (two bets on one balance still happen).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from sim.scenario import Population, Scenario

DAY_S = 86_400.0
HOUR_S = 3_600.0


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
    """Online players as arrays: ``player_id`` (int64), ``weight`` (float32), ``cum_weight``.

    Entries are in random order; the first ``online_n`` of them are the players online.
    Whales (a ``whales.share`` of the players) carry weight ``whales.activity_multiplier``,
    everyone else 1.
    """

    __slots__ = ("cum_weight", "player_id", "weight")

    def __init__(self, player_id: np.ndarray, weight: np.ndarray) -> None:
        if player_id.shape != weight.shape or player_id.ndim != 1 or player_id.size == 0:
            raise ValueError("player_id and weight must be equal-length, non-empty 1-D arrays")
        self.player_id: np.ndarray = np.ascontiguousarray(player_id, dtype=np.int64)
        self.weight: np.ndarray = np.ascontiguousarray(weight, dtype=np.float32)
        # float64: a float32 running sum over a million weights would lose the unit steps.
        self.cum_weight: np.ndarray = np.cumsum(self.weight, dtype=np.float64)

    @classmethod
    def build(cls, population: Population, rng: np.random.Generator, size: int,
              partition: tuple[int, int] = (0, 1)) -> OnlinePool:
        """Draw ``size`` distinct players of the partition ``(k, K)`` (ids ``k + K j``)."""
        k, parts = partition
        space = (population.registered_players - k + parts - 1) // parts
        size = max(1, min(size, space))
        ids = k + parts * sample_distinct(rng, space, size)
        whales = rng.random(size) < population.whales.share
        weight = np.where(whales, np.float32(population.whales.activity_multiplier),
                          np.float32(1.0)).astype(np.float32)
        return cls(ids, weight)

    @property
    def size(self) -> int:
        """Entries in the pool (the most players ever online in the window)."""
        return int(self.player_id.size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool's arrays."""
        return int(self.player_id.nbytes + self.weight.nbytes + self.cum_weight.nbytes)

    def draw(self, rng: np.random.Generator, n: int,
             online_n: int | np.ndarray) -> np.ndarray:
        """``n`` player ids weighted by activity among the first ``online_n`` entries.

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
        return self.player_id[idx]


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
    spikes active at t that list o)``. Same generator state, same stream.
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
        self._spikes = [
            (sp.start_s, sp.start_s + sp.duration_s, sp.multiplier,
             np.array([(sp.operations is None) or (o in sp.operations) for o in self.op_names]))
            for sp in pop.spikes
        ]
        peak = max_online(pop, self.start_day_s, self.duration_s)
        self.pool = OnlinePool.build(pop, rng, math.ceil(peak / parts), self.partition)

    # ------------------------------------------------------------------ rates

    def online_n(self, t: float | np.ndarray) -> np.ndarray:
        """Online players of the partition at window time ``t`` (pool entries online)."""
        n = online_count(self.population, self.start_day_s + np.asarray(t, dtype=np.float64))
        return self._pool_entries(np.asarray(n))

    def _pool_entries(self, online: np.ndarray) -> np.ndarray:
        """Pool entries online given the whole population's online count."""
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

    def _rate_bound(self, a: float, b: float) -> float:
        """An upper bound of the total rate over ``[a, b]``."""
        peak = max_online(self.population, self.start_day_s + a, b - a)
        mult = np.ones(len(self.op_names))
        for start, end, m, ops in self._spikes:
            if start < b and end > a and m > 1.0:
                mult[ops] *= m
        return peak * self.per_player_rate / self.partition[1] * float(self.op_share @ mult)

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
        if any(start < b and end > a for start, end, _, _ in self._spikes):
            cum = np.cumsum(base[:, None] * self.op_share * self._multipliers(t), axis=1)
            op = (cum <= u[:, None]).sum(axis=1)
            keep = op < len(self.op_names)
            op = op[keep]
        else:  # shares constant over the chunk: no per-operation matrix needed
            keep = u < base
            op = np.searchsorted(self._cum_share, u[keep] / base[keep], side="right")
            np.minimum(op, self._last_op, out=op)
        t = t[keep]
        op = op.astype(np.int16)
        player = self.pool.draw(rng, t.size, self._pool_entries(online[keep]))
        amount = self.population.bet_size.sample(rng, t.size)
        return ArrivalChunk(t, op, player, amount)

    def chunks(self, chunk_s: float = 1.0) -> Iterator[ArrivalChunk]:
        """Arrivals over ``[0, duration_s)`` chunk by chunk (bounded memory), in time order.

        Call once per stream: the chunks consume the stream's generator. The same seed and
        ``chunk_s`` give the same arrivals; another ``chunk_s`` gives another sample of the
        same process.
        """
        if chunk_s <= 0:
            raise ValueError("chunk_s must be positive")
        n_chunks = math.ceil(self.duration_s / chunk_s)
        for i in range(n_chunks):
            a = i * chunk_s
            b = min((i + 1) * chunk_s, self.duration_s)
            if b > a:
                yield self._chunk(a, b)
