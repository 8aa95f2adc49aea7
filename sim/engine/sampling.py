"""Random draws of service demands, prepared once per step (never looked up per request).

Every place where the engine needs a random time (a step's CPU, database or external time, a
network hop, a think time, a cache lookup) or a branch decision holds a :data:`Draw`: a
callable taking the *key* of the request it draws for (its arrival index) and answering
seconds (or, for a branch, a uniform number in [0, 1)). Draws are made by one
:class:`DrawFactory` per engine, the one place where the way of drawing is decided:

* the default, :class:`BatchDraws`, draws in batches of :data:`BATCH` from the engine's
  generator, one batch stream per distinct distribution object (two steps naming the same
  demand share it); the key is not used;
* a keyed stream (the same request gets the same demand in every deployment, for paired
  comparisons) plugs in as another factory answering ``draw(key)`` from ``(site, key)``;
  ``site`` names where the draw is made (``"op/step 0.1:cpu"``), stable across deployments.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import numpy as np

from sim.model.distributions import Distribution

BATCH = 2048  # values drawn per numpy call (numpy is slow one value at a time)

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
