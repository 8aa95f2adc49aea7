"""Service-demand distributions: declared in scenarios, sampled in vectorised batches.

Every distribution is in milliseconds in the scenario file and is sampled in **seconds** by
the engine (the simulator's clock unit). Each kind is a pydantic model discriminated by
``kind`` so a bad field is reported with its path.
"""

from __future__ import annotations

import bisect
import math
from functools import cached_property
from itertools import pairwise
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sim.model import limits as L


class _Dist(BaseModel):
    model_config = L.FINITE | ConfigDict(frozen=True)

    def mean_s(self) -> float:  # pragma: no cover - overridden
        raise AssertionError("abstract")

    def scv(self) -> float:  # pragma: no cover - overridden
        """Squared coefficient of variation (variance / mean^2)."""
        raise AssertionError("abstract")

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover
        raise AssertionError("abstract")

    def scaled(self, factor: float) -> Distribution:
        """The same shape with every value multiplied by ``factor``."""
        raise AssertionError("abstract")  # pragma: no cover


class Constant(_Dist):
    """Always the same value."""

    kind: Literal["constant"] = "constant"
    value_ms: float = Field(ge=0, le=L.MAX_DEMAND_MS)

    def mean_s(self) -> float:
        return self.value_ms / 1000.0

    def scv(self) -> float:
        return 0.0

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value_ms / 1000.0)

    def scaled(self, factor: float) -> Constant:
        return Constant(value_ms=self.value_ms * factor)


class Exponential(_Dist):
    """Exponential with the given mean."""

    kind: Literal["exponential"] = "exponential"
    mean_ms: float = Field(ge=L.MIN_MEAN_MS, le=L.MAX_DEMAND_MS)

    def mean_s(self) -> float:
        return self.mean_ms / 1000.0

    def scv(self) -> float:
        return 1.0

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_ms / 1000.0, n)

    def scaled(self, factor: float) -> Exponential:
        return Exponential(mean_ms=self.mean_ms * factor)


class LogNormal(_Dist):
    """Log-normal given by its median and the sigma of the underlying normal."""

    kind: Literal["lognormal"] = "lognormal"
    median_ms: float = Field(ge=L.MIN_MEAN_MS, le=L.MAX_DEMAND_MS)
    sigma: float = Field(ge=0, le=L.MAX_SIGMA)

    def mean_s(self) -> float:
        return self.median_ms / 1000.0 * math.exp(self.sigma**2 / 2)

    def scv(self) -> float:
        return math.exp(self.sigma**2) - 1.0

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(math.log(self.median_ms / 1000.0), self.sigma, n)

    def scaled(self, factor: float) -> LogNormal:
        return LogNormal(median_ms=self.median_ms * factor, sigma=self.sigma)


class Gamma(_Dist):
    """Gamma given by its mean and coefficient of variation."""

    kind: Literal["gamma"] = "gamma"
    mean_ms: float = Field(ge=L.MIN_MEAN_MS, le=L.MAX_DEMAND_MS)
    cv: float = Field(gt=0, le=L.MAX_CV)

    def mean_s(self) -> float:
        return self.mean_ms / 1000.0

    def scv(self) -> float:
        return self.cv**2

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, (self.mean_ms / 1000.0) / shape, n)

    def scaled(self, factor: float) -> Gamma:
        return Gamma(mean_ms=self.mean_ms * factor, cv=self.cv)


def _check_samples(v: list[float]) -> list[float]:
    if any(not 0 <= x <= L.MAX_DEMAND_MS for x in v):
        raise ValueError(f"every sample must be a finite number in [0, {L.MAX_DEMAND_MS:g}]")
    return v


class Empirical(_Dist):
    """Resampling of measured values (for example from the reference implementation)."""

    kind: Literal["empirical"] = "empirical"
    samples_ms: list[float] = Field(min_length=1)

    @field_validator("samples_ms")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        return _check_samples(v)

    def mean_s(self) -> float:
        return float(np.mean(self.samples_ms)) / 1000.0

    def scv(self) -> float:
        a = np.asarray(self.samples_ms)
        m = a.mean()
        return float(a.var() / m**2) if m > 0 else 0.0

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        a = np.asarray(self.samples_ms) / 1000.0
        return a[rng.integers(0, len(a), n)]

    def scaled(self, factor: float) -> Empirical:
        return Empirical(samples_ms=[x * factor for x in self.samples_ms])


def empirical_quantile(ascending: list[float], u: float) -> float:
    """The inverse CDF at ``u`` in [0, 1) of :class:`Empirical`'s resampling (each sample
    with probability 1/n): the sample of rank ``floor(u n)`` in ascending order."""
    assert 0.0 <= u < 1.0, u
    return ascending[min(int(u * len(ascending)), len(ascending) - 1)]


def locate(xs: list[float], x: float) -> tuple[int, int, float]:
    """Where ``x`` lies among the increasing points ``xs``: (lower index, upper index, weight
    of the upper one), held beyond the ends (both indexes the end point, weight 0). The one
    rule of every rate table (``cpu_by_rate``, pauses, ``empirical_by_rate``)."""
    i = bisect.bisect_right(xs, x)
    if i == 0:
        return 0, 0, 0.0
    if i == len(xs):
        return i - 1, i - 1, 0.0
    return i - 1, i, (x - xs[i - 1]) / (xs[i] - xs[i - 1])


def quantile_by_rate(rates: list[float], levels: list[list[float]], u: float,
                     rps: float) -> float:
    """Quantile ``u`` at ``rps`` requests/s: each level's :func:`empirical_quantile` (samples
    ascending), linear in the rate between the two levels around ``rps``, held beyond the
    first and last (:func:`locate`)."""
    lo, hi, w = locate(rates, rps)
    q0 = empirical_quantile(levels[lo], u)
    return q0 if w == 0.0 else q0 + (empirical_quantile(levels[hi], u) - q0) * w


class RateLevel(BaseModel):
    """The waits measured while the deployment received ``rps`` requests per second."""

    model_config = L.FINITE | ConfigDict(frozen=True)

    rps: float = Field(gt=0, le=L.MAX_RATE_RPS)
    samples_ms: list[float] = Field(min_length=1)

    @field_validator("samples_ms")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        return _check_samples(v)


def increasing_rps(points: list[Any], name: str) -> list[Any]:
    """``points`` (each with an ``rps``) when their rates increase strictly; else a
    ValueError naming the first pair out of order (``name[i].rps``)."""
    for i, (a, b) in enumerate(pairwise(points)):
        if b.rps <= a.rps:
            raise ValueError(f"rps must increase strictly from point to point: "
                             f"{name}[{i + 1}].rps {b.rps:g} <= {name}[{i}].rps {a.rps:g}")
    return points


class EmpiricalByRate(_Dist):
    """A wait whose distribution depends on the load: measured ``samples_ms`` at a few request
    rates into the deployment (the requests entering it per second), e.g. a database call
    that group commit makes faster under load. Only a step's ``external`` wait may use it.

    In a run, a wait at rate R is quantile interpolation: one uniform u, each level's
    empirical quantile at u (:func:`empirical_quantile`, the inverse CDF of ``empirical``),
    linear in R between the two levels around R, held beyond the first and last level
    (:func:`quantile_by_rate`). One level is exactly the plain ``empirical`` distribution.

    Outside a rate context (``mean_s``, ``scv``, ``sample_s``: the analytic load estimate,
    cost code) the **first (lowest-rate) level** stands for the whole distribution.
    """

    kind: Literal["empirical_by_rate"] = "empirical_by_rate"
    levels: list[RateLevel] = Field(min_length=1, max_length=L.MAX_RATE_LEVELS)

    @field_validator("levels")
    @classmethod
    def _increasing(cls, v: list[RateLevel]) -> list[RateLevel]:
        return increasing_rps(v, "levels")

    @cached_property
    def first(self) -> Empirical:
        """The lowest-rate level as a plain ``empirical`` (one object, so every use of it
        shares one batch stream of draws, as a plain ``empirical`` demand does)."""
        return Empirical(samples_ms=self.levels[0].samples_ms)

    @cached_property
    def rates(self) -> list[float]:
        return [lv.rps for lv in self.levels]

    @cached_property
    def ascending_s(self) -> list[list[float]]:
        """Each level's samples in seconds, ascending (the quantile tables)."""
        return [sorted(x / 1000.0 for x in lv.samples_ms) for lv in self.levels]

    def quantile_s(self, u: float, rps: float) -> float:
        """The wait (s) of uniform ``u`` at ``rps`` requests/s into the deployment."""
        return quantile_by_rate(self.rates, self.ascending_s, u, rps)

    def mean_s(self) -> float:
        return self.first.mean_s()

    def scv(self) -> float:
        return self.first.scv()

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.first.sample_s(rng, n)

    def scaled(self, factor: float) -> EmpiricalByRate:
        return EmpiricalByRate(levels=[
            RateLevel(rps=lv.rps, samples_ms=[x * factor for x in lv.samples_ms])
            for lv in self.levels])


Distribution = Annotated[
    Constant | Exponential | LogNormal | Gamma | Empirical, Field(discriminator="kind")
]
"""A service demand valid anywhere (CPU, database, network, think time, external wait)."""

ExternalDistribution = Annotated[
    Constant | Exponential | LogNormal | Gamma | Empirical | EmpiricalByRate,
    Field(discriminator="kind"),
]
"""What a step's ``external`` wait may be: any :data:`Distribution` or ``empirical_by_rate``
(the ``demands`` table holds these too; ``sim.model.scenario`` refuses a rate-dependent one
anywhere but ``external``)."""


class BetSize(BaseModel):
    """Stake distribution in minor units (log-normal, clipped to [min, max])."""

    model_config = L.FINITE | ConfigDict(frozen=True)

    median: int = Field(default=100, gt=0, le=L.MAX_STAKE, description="median stake, minor units")
    sigma: float = Field(default=1.0, ge=0, le=L.MAX_SIGMA)
    min: int = Field(default=10, gt=0, le=L.MAX_STAKE)
    max: int = Field(default=1_000_000, gt=0, le=L.MAX_STAKE)

    @model_validator(mode="after")
    def _ordered(self) -> BetSize:
        if not self.min <= self.median <= self.max:
            raise ValueError("need min <= median <= max")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Stakes as int64 minor units."""
        x = rng.lognormal(math.log(self.median), self.sigma, n)
        return np.clip(np.rint(x), self.min, self.max).astype(np.int64)
