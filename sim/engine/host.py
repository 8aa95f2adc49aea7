"""What changes with load on a real machine (issue 8): a shared host and load-dependent CPU.

* :class:`RateMeter`: requests per second into a replica, an exponentially weighted count of
  arrivals (time constant :data:`RATE_TAU_S`), read at any instant;
* :class:`CpuByRate`: a replica's CPU demand multiplier as a function of that rate (linear
  between the calibrated points, held beyond them): the server's CPU per request falls as
  batching and group commit amortise work;
* :class:`Host`: one machine whose cores every CPU station of the deployment shares. Each
  station keeps its own processor sharing over its own cores (a Python process uses at most
  its cores); on top, when the stations' running jobs plus the background (other processes
  and the load generator's CPU at the current request rate) want more cores than the host
  has, every running job slows by ``host cores / wanted``. The stations are
  :class:`sim.engine.stations.PSCpu`; the host advances and re-arms them whenever one of them
  gains or loses a job (one timer per station, as without a host).
  With a scheduler slice, the background does not slow the jobs smoothly: the deployment
  runs for exponential slices of mean ``slice`` and stalls (speed 0) between them for
  exponential times of mean ``slice (1 / s - 1)``, ``s`` being processor sharing's share
  ``min(1, cores / (1 + background))``: the same share of time, in whole slices, as a
  process that the kernel deschedules; the stations' sharing among themselves stays smooth.
  With ``pauses`` (GC pauses, checkpoints), the whole host also stops (speed 0) for measured
  durations, at a Poisson rate interpolated in the deployment's entry rate
  (:class:`EntryMeter`). Slice stalls and pauses compose: the host runs only when neither
  holds it (:attr:`Host.held_by`).
* :class:`EntryMeter`: the external requests per second entering the deployment (at full
  size in a reduced run), read by the pauses and by ``empirical_by_rate`` waits.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from itertools import pairwise
from typing import Protocol

import numpy as np
import simpy

from sim.model.distributions import locate
from sim.model.topology import HostSpec

RATE_TAU_S = 1.0
"""Time constant of the rate meters (s): long enough to smooth Poisson arrivals at a few
requests per second, short against the calibrated load levels' durations."""


class RateMeter:
    """Arrivals per second, exponentially weighted over :data:`RATE_TAU_S`; ticks a parent
    meter too (a replica's meter feeds its host's)."""

    __slots__ = ("last", "level", "parent")

    def __init__(self, parent: RateMeter | None = None) -> None:
        self.level = 0.0
        self.last = 0.0
        self.parent = parent

    def tick(self, now: float) -> None:
        self.level = self.level * math.exp((self.last - now) / RATE_TAU_S) + 1.0
        self.last = now
        if self.parent is not None:
            self.parent.tick(now)

    def rate(self, now: float) -> float:
        return self.level * math.exp((self.last - now) / RATE_TAU_S) / RATE_TAU_S


class CpuByRate:
    """CPU demand multiplier against a meter's rate: linear between points, held beyond."""

    __slots__ = ("factors", "meter", "rates")

    def __init__(self, points: Sequence[tuple[float, float]], meter: RateMeter) -> None:
        assert points and all(b[0] > a[0] for a, b in pairwise(points)), \
            "cpu_by_rate: rates must increase"
        assert all(f > 0 for _, f in points), "cpu_by_rate: factors must be positive"
        self.rates = [r for r, _ in points]
        self.factors = [f for _, f in points]
        self.meter = meter

    def __call__(self, now: float) -> float:
        return interpolate(self.rates, self.factors, self.meter.rate(now))


class EntryMeter(RateMeter):
    """External requests per second entering a deployment, ticked once per request at its
    route's entry (never by internal hops). A reduced run simulates 1/``k`` of the traffic:
    :meth:`full_rate` is the full-size rate that rate-dependent tables are calibrated on."""

    __slots__ = ("k",)

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        assert k >= 1, k
        self.k = k

    def full_rate(self, now: float) -> float:
        return self.rate(now) * self.k


def interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """``ys`` at ``x``, linear between the points of increasing ``xs``, held beyond them."""
    lo, hi, w = locate(xs, x)
    return ys[lo] + (ys[hi] - ys[lo]) * w


def bracket(xs: list[float], x: float, u: float) -> int:
    """Index of the point of increasing ``xs`` a mixture at ``x`` draws from, given a uniform
    ``u``: between two points the upper with probability ``x``'s position between them;
    below the first point the first, above the last the last."""
    lo, hi, w = locate(xs, x)
    return hi if u < w else lo


class HostMember(Protocol):
    """What the host needs of a CPU station (``PSCpu``)."""

    n: int
    cores: int

    def advance(self) -> None: ...

    def set_speed(self, speed: float, force: bool) -> None: ...


class Host:
    """The cores every CPU station of one deployment shares."""

    __slots__ = ("background", "client_s", "cores", "entry", "held_by", "members", "meter",
                 "pause_count", "paused_s", "pauses", "slice", "speed")

    def __init__(self, spec: HostSpec, entry: EntryMeter | None = None) -> None:
        self.cores = spec.cores
        self.background = spec.background_cores
        self.client_s = spec.client_s_per_request
        self.slice = spec.slice_s
        self.pauses = spec.pauses
        assert self.pauses is None or entry is not None, "host pauses need the entry meter"
        self.entry = entry
        self.members: list[HostMember] = []
        self.meter = RateMeter()  # requests entering the deployment (the generator's load)
        self.speed = 1.0
        self.held_by: set[str] = set()  # "slice" (a scheduler stall), "pause": speed 0
        self.pause_count = 0   # pauses finished
        self.paused_s = 0.0    # seconds of those pauses

    def others(self, now: float) -> float:
        """Cores the rest of the machine wants now: background and the load generator."""
        return self.background + self.client_s * self.meter.rate(now)

    def wanted(self, now: float) -> float:
        """Cores wanted now: running jobs (at most each station's cores), and the others
        when they share smoothly (no slice)."""
        running = sum(min(m.n, m.cores) for m in self.members)
        return running + (0.0 if self.slice > 0 else self.others(now))

    def start(self, env: simpy.Environment, rng: np.random.Generator) -> None:
        """Begin the slices and the pauses (nothing to do for smooth sharing)."""
        if self.slice > 0:
            env.process(self._slices(env, rng))
        if self.pauses is not None and max(self.pauses.per_s) > 0:
            env.process(self._pauses(env, rng))

    def _slices(self, env: simpy.Environment, rng: np.random.Generator) -> Generator:
        while True:
            yield env.timeout(rng.exponential(self.slice))
            share = min(1.0, self.cores / (1.0 + self.others(env.now)))
            if share >= 1.0:
                continue
            self._pause("slice", True, env.now)
            yield env.timeout(rng.exponential(self.slice * (1.0 / share - 1.0)))
            self._pause("slice", False, env.now)

    def _pauses(self, env: simpy.Environment, rng: np.random.Generator) -> Generator:
        """Poisson pauses at ``per_s`` (interpolated in the full-size entry rate) by thinning:
        candidates at the table's highest rate, each kept with probability rate now / highest.
        The process sleeps through a pause, so pauses never overlap: their starts are Poisson
        in the time the host is not paused (the paused share is x / (1 + x), x = per_s times
        the mean duration; x itself while pauses are short and rare)."""
        spec = self.pauses
        entry = self.entry
        assert spec is not None and entry is not None
        rates, per_s, durations = list(spec.rates), list(spec.per_s), spec.durations_s
        top = max(per_s)
        while True:
            yield env.timeout(rng.exponential(1.0 / top))
            rate = entry.full_rate(env.now)
            if rng.random() * top >= interpolate(rates, per_s, rate):
                continue
            point = bracket(rates, rate, rng.random())
            d = durations[point][int(rng.integers(len(durations[point])))]
            self._pause("pause", True, env.now)
            yield env.timeout(d)
            self._pause("pause", False, env.now)
            self.pause_count += 1
            self.paused_s += d

    def _pause(self, by: str, on: bool, now: float) -> None:
        """``by`` ("slice" or "pause") starts (``on``) or stops holding the host."""
        assert (by in self.held_by) != on, f"host: {by} already {'on' if on else 'off'}"
        self.advance_all()
        if on:
            self.held_by.add(by)
        else:
            self.held_by.remove(by)
        if self.members:
            self.respeed(self.members[0], now)

    def advance_all(self) -> None:
        """Bring every station's virtual time to now at the speed it had (before a change)."""
        for m in self.members:
            m.advance()

    def respeed(self, changed: HostMember, now: float) -> None:
        """After ``changed`` gained or lost jobs: the new speed for every station; re-arm the
        timers of the stations whose speed moved, and of ``changed``."""
        wanted = self.wanted(now)
        speed = 0.0 if self.held_by else min(1.0, self.cores / wanted) if wanted > 0 else 1.0
        assert 0.0 <= speed <= 1.0, speed
        assert (speed == 0.0) == bool(self.held_by), "the host runs only when nothing holds it"
        moved = speed != self.speed
        self.speed = speed
        for m in self.members:
            if moved or m is changed:
                m.set_speed(speed, m is changed)
