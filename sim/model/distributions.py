"""Service-demand distributions: declared in scenarios, sampled in vectorised batches.

Every distribution is in milliseconds in the scenario file and is sampled in **seconds** by
the engine (the simulator's clock unit). Each kind is a pydantic model discriminated by
``kind`` so a bad field is reported with its path.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

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


class Empirical(_Dist):
    """Resampling of measured values (for example from the reference implementation)."""

    kind: Literal["empirical"] = "empirical"
    samples_ms: list[float] = Field(min_length=1)

    @field_validator("samples_ms")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(not 0 <= x <= L.MAX_DEMAND_MS for x in v):
            raise ValueError(f"every sample must be a finite number in [0, {L.MAX_DEMAND_MS:g}]")
        return v

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


Distribution = Annotated[
    Constant | Exponential | LogNormal | Gamma | Empirical, Field(discriminator="kind")
]


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
