"""Random draws of service demands, prepared once per step (never looked up per request).

Every place where the engine needs a random time (a step's CPU, database or external time, a
network hop, a think time, a cache lookup) or a branch decision holds a :data:`Draw`: a
callable taking the *key* of the request it draws for (its arrival index) and answering
seconds (or, for a branch, a uniform number in [0, 1)). Draws are made by one
:class:`DrawFactory` per engine, the one place where the way of drawing is decided:

* the default, :class:`BatchDraws`, draws in batches of :data:`BATCH` from the engine's
  generator, one batch stream per distinct distribution object (two steps naming the same
  demand share it); the key is not used;
* :class:`KeyedDraws` (the runner's default, for paired comparisons): the same request gets
  the same demand in every deployment. Each ``site`` (where the draw is made, e.g.
  ``"bet/0.1:cpu"``, stable across deployments) has its own stream, and the value for
  request key ``k`` is element ``k`` of that stream, whatever path the request took and in
  whatever order requests reach the site; nested calls and branches stay aligned because a
  skipped branch simply never asks for its element. Sites drawn several times for one
  request (:data:`REPEATED_SITES`: network hops, RPC CPU, publishing, whose counts differ
  between deployments anyway) are drawn unkeyed by a fallback factory.

A wait of ``empirical_by_rate`` is a :class:`RateWait`: a uniform of the factory (keyed like
a branch) turned into a wait at the deployment's current request rate.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from hashlib import blake2b
from typing import Protocol

import numpy as np

from sim.model.distributions import Distribution, EmpiricalByRate, quantile_by_rate

BATCH = 2048  # values drawn per numpy call (numpy is slow one value at a time)
WINDOWS_KEPT = 8  # keyed draws: windows of BATCH keys kept per site (older ones are redrawn)
REPEATED_SITES = frozenset({"network_hop", "rpc_cpu", "publish"})  # several per request

Draw = Callable[[int], float]


def zero(_key: int) -> float:
    """The draw of an absent demand."""
    return 0.0


class DrawFactory(Protocol):
    """Makes the draws of one engine run (see the module docstring)."""

    def demand(self, dist: Distribution | None, site: str) -> Draw:
        """Seconds drawn from ``dist`` (0 when absent) at ``site``."""
        ...

    def uniform(self, site: str) -> Draw:
        """Uniform numbers in [0, 1) at ``site`` (branch decisions, hit or miss)."""
        ...


class Batched:
    """Values from ``fill(n)`` (an array of n draws) handed out one at a time; the request
    key is ignored."""

    __slots__ = ("_buf", "_fill", "_i")

    def __init__(self, fill: Callable[[int], np.ndarray]):
        self._fill = fill
        self._buf: list[float] = []
        self._i = 0

    def __call__(self, _key: int = 0) -> float:
        i = self._i
        if i >= len(self._buf):
            self._buf = self._fill(BATCH).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]


class Sampler(Batched):
    """Draws from a distribution in batches of :data:`BATCH` on generator ``rng``."""

    __slots__ = ()

    def __init__(self, dist: Distribution, rng: np.random.Generator):
        super().__init__(partial(dist.sample_s, rng))


class BatchDraws:
    """The default factory: one batch sampler per distinct distribution on one generator.

    Branch decisions use a generator of their own (seeded from the engine's generator when
    the first one is asked for), so a scenario without branches draws exactly what it drew
    before branches existed.
    """

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._samplers: dict[int, Sampler] = {}
        self._uniform: Batched | None = None

    def demand(self, dist: Distribution | None, site: str) -> Draw:
        if dist is None:
            return zero
        s = self._samplers.get(id(dist))
        if s is None:
            s = self._samplers[id(dist)] = Sampler(dist, self._rng)
        return s

    def uniform(self, site: str) -> Draw:
        if self._uniform is None:
            self._uniform = Batched(np.random.default_rng(self._rng.integers(0, 2**63)).random)
        return self._uniform


def site_id(site: str) -> int:
    """A stable 64-bit number for a site name (the same in every process, unlike ``hash``)."""
    return int.from_bytes(blake2b(site.encode(), digest_size=8).digest(), "little")


class Keyed:
    """Element ``key`` of one site's stream: keys are cut in windows of :data:`BATCH`, window
    ``w`` is drawn by ``fill(generator of (seed, site, w), BATCH)``, so a value depends only
    on (seed, site, key). At most :data:`WINDOWS_KEPT` windows are held (bounded memory); a
    request arriving at an evicted window redraws it, getting the same values."""

    __slots__ = ("_entropy", "_fill", "_last", "_lastw", "_prefix", "_windows")

    def __init__(self, fill: Callable[[np.random.Generator, int], np.ndarray],
                 seed: np.random.SeedSequence, site: str):
        self._fill = fill
        self._entropy = seed.entropy
        self._prefix = (*seed.spawn_key, site_id(site))
        self._windows: dict[int, list[float]] = {}
        self._lastw = -1
        self._last: list[float] = []

    def _window(self, w: int) -> list[float]:
        vals = self._windows.get(w)
        if vals is None:
            rng = np.random.default_rng(np.random.SeedSequence(
                self._entropy, spawn_key=(*self._prefix, w)))
            vals = self._windows[w] = self._fill(rng, BATCH).tolist()
            if len(self._windows) > WINDOWS_KEPT:
                del self._windows[next(iter(self._windows))]  # the oldest window drawn
        self._lastw = w
        self._last = vals
        return vals

    def __call__(self, key: int) -> float:
        w, i = divmod(key, BATCH)
        vals = self._last if w == self._lastw else self._window(w)
        return vals[i]


def _uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.random(n)


class KeyedDraws:
    """A factory whose draws depend only on (``seed``, site, request key), see the module
    docstring; :data:`REPEATED_SITES` go to ``fallback``. Two draws at one site with the
    same key are equal: sites are unique per step, and sources share a site only with
    disjoint keys (closed groups' think times). One seed shared by the deployments
    of a replication pairs them; one seed each makes them independent."""

    def __init__(self, seed: np.random.SeedSequence, fallback: DrawFactory):
        self._seed = seed
        self._fallback = fallback

    def demand(self, dist: Distribution | None, site: str) -> Draw:
        if dist is None:
            return zero
        if site in REPEATED_SITES:
            return self._fallback.demand(dist, site)
        return Keyed(lambda rng, n: dist.sample_s(rng, n), self._seed, site)

    def uniform(self, site: str) -> Draw:
        return Keyed(_uniform, self._seed, site)


class RateWait:
    """The wait of an ``empirical_by_rate`` demand: uniform ``u`` drawn at the step's site
    (so paired deployments share it), its quantile at ``rate()`` requests/s now
    (:func:`sim.model.distributions.quantile_by_rate`)."""

    __slots__ = ("levels", "rate", "rates", "uniform")

    def __init__(self, dist: EmpiricalByRate, uniform: Draw, rate: Callable[[], float]):
        self.rates = dist.rates
        self.levels = dist.ascending_s
        self.uniform = uniform
        self.rate = rate

    def __call__(self, key: int) -> float:
        return quantile_by_rate(self.rates, self.levels, self.uniform(key), self.rate())


def child_seed(seed: np.random.SeedSequence, index: int) -> np.random.SeedSequence:
    """Child ``index`` of ``seed`` by key (the same whatever was spawned from it before)."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, index))
