"""Resilience policies as data: what a caller does around a call, how a service queues and
scales.

Two layers, like the rest of the model:

* pydantic models of the scenario language (:class:`CallPolicy` with its :class:`Breaker`,
  :class:`Bulkhead` and :class:`RetryBudget`; :class:`Autoscaling`), every number finite and
  bounded (named limits below);
* frozen data the engine reads (:class:`CallPolicySpec`, :class:`AutoscalingSpec`), compiled
  once per deployment by :mod:`sim.model.topology`.

**Defaults are what the reference back office does today** for its internal calls
(``reference_impl/transport/resilience.py``, ``CallPolicy``): 5 s timeout per attempt, 2
retries of idempotent calls with exponential backoff from 50 ms (at most 1 s) plus up to
50 ms of jitter, no retry budget, a breaker per dependency (failure rate >= 50% over the last
20 calls, at least 10 calls; open 5 s; 3 probes) and a bulkhead of 64 calls in flight per
dependency, the last 16 only for money (high-priority) calls, with no queue (a call that finds
no slot is shed at once). A deployment that says nothing about ``call_policy`` therefore
behaves like the reference; each policy is turned off explicitly (``timeout_ms: null``,
``retries: 0``, ``breaker: null``, ``bulkhead: null``) or all of them (``call_policy: null``).

What a timeout means here: the caller stops waiting and its worker moves on; the callee's
work goes on to its end (the reference's callee does: an HTTP server finishes a request whose
client left), so a timed-out call still loads the callee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from sim.model import limits as L

# ----------------------------------------------------------------------------- limits

MAX_POLICY_MS = 3_600_000.0
"""One hour: the largest timeout, backoff, jitter, window or delay of a policy (ms)."""
MAX_POLICY_S = 86_400.0
"""One day: the largest window, interval, delay or cooldown given in seconds."""
MAX_RETRIES = 10
"""Extra attempts of one call (11 attempts in all)."""
MAX_BREAKER_WINDOW = 100_000
"""Calls a breaker's failure rate is computed over."""
MAX_IN_FLIGHT = 1_000_000
"""Calls in flight through one bulkhead."""
MAX_BUDGET_RETRIES_PER_S = 1_000_000.0
"""A retry budget's floor of retries per second."""
BUDGET_BUCKETS = 10
"""A retry budget's window is kept as this many buckets (bounded memory)."""

PRIORITIES: dict[str, int] = {"high": 0, "normal": 1, "low": 2}
"""Operation priority classes, lower first: bets and wins ``high``, reporting ``low``."""
Priority = Literal["high", "normal", "low"]

# reference back office (reference_impl/transport/resilience.py, CallPolicy)
REF_TIMEOUT_MS = 5_000.0
REF_RETRIES = 2
REF_BACKOFF_INITIAL_MS = 50.0
REF_BACKOFF_MAX_MS = 1_000.0
REF_BACKOFF_JITTER_MS = 50.0
REF_BREAKER_WINDOW = 20
REF_BREAKER_MIN_CALLS = 10
REF_BREAKER_FAILURE_RATE = 0.5
REF_BREAKER_OPEN_S = 5.0
REF_BREAKER_PROBES = 3
REF_MAX_CONCURRENT = 64
REF_RESERVED_FOR_HIGH = 16


class _Model(BaseModel):
    model_config = L.FINITE


class RetryBudget(_Model):
    """Retries allowed over a sliding window: at most ``ratio`` of the calls plus
    ``min_per_s`` a second (Finagle's ``RetryBudget``, Envoy's ``retry_budget``). The
    reference back office has none."""

    ratio: float = Field(default=0.2, ge=0, le=1,
                         description="retries allowed per call made in the window")
    window_s: float = Field(default=10.0, gt=0, le=MAX_POLICY_S)
    min_per_s: float = Field(default=10.0, ge=0, le=MAX_BUDGET_RETRIES_PER_S,
                             description="retries a second always allowed (a floor)")


class Breaker(_Model):
    """Circuit breaker per caller replica and dependency: opens when the failure rate over
    the last ``window`` calls reaches ``failure_rate`` (once ``min_calls`` are in the
    window); while open, calls are rejected at once; after ``open_s`` up to ``probes`` calls
    go through (half-open): all succeeding closes it, one failing re-opens it."""

    window: int = Field(default=REF_BREAKER_WINDOW, ge=1, le=MAX_BREAKER_WINDOW)
    min_calls: int = Field(default=REF_BREAKER_MIN_CALLS, ge=1, le=MAX_BREAKER_WINDOW)
    failure_rate: float = Field(default=REF_BREAKER_FAILURE_RATE, gt=0, le=1)
    open_s: float = Field(default=REF_BREAKER_OPEN_S, gt=0, le=MAX_POLICY_S)
    probes: int = Field(default=REF_BREAKER_PROBES, ge=1, le=MAX_BREAKER_WINDOW)

    @model_validator(mode="after")
    def _fits(self) -> Breaker:
        if self.min_calls > self.window:
            raise ValueError(f"min_calls ({self.min_calls}) must be <= window ({self.window})")
        return self


class Bulkhead(_Model):
    """At most ``max_concurrent`` calls in flight from one caller replica to one dependency
    (a separate pool per dependency, so a slow one holds at most that many of the caller's
    workers); the last ``reserved_for_high`` slots only for high-priority operations. No
    queue: a call finding no slot is shed at once (503)."""

    max_concurrent: int = Field(default=REF_MAX_CONCURRENT, ge=1, le=MAX_IN_FLIGHT)
    reserved_for_high: int = Field(default=REF_RESERVED_FOR_HIGH, ge=0, le=MAX_IN_FLIGHT)

    @model_validator(mode="after")
    def _fits(self) -> Bulkhead:
        if self.reserved_for_high >= self.max_concurrent:
            raise ValueError(f"reserved_for_high ({self.reserved_for_high}) must be < "
                             f"max_concurrent ({self.max_concurrent}): other calls need a slot")
        return self


class CallPolicy(_Model):
    """What a caller does around each call to another service. Defaults: the reference back
    office's internal calls (module docstring)."""

    timeout_ms: float | None = Field(
        default=REF_TIMEOUT_MS, gt=0, le=MAX_POLICY_MS,
        description="per attempt; the caller stops waiting, the callee's work goes on; "
        "null: wait forever")
    retries: int = Field(default=REF_RETRIES, ge=0, le=MAX_RETRIES,
                         description="extra attempts of an idempotent call after a failure "
                         "or timeout (never after a rejection by breaker or bulkhead)")
    backoff_initial_ms: float = Field(default=REF_BACKOFF_INITIAL_MS, ge=0, le=MAX_POLICY_MS)
    backoff_max_ms: float = Field(default=REF_BACKOFF_MAX_MS, ge=0, le=MAX_POLICY_MS)
    backoff_jitter_ms: float = Field(default=REF_BACKOFF_JITTER_MS, ge=0, le=MAX_POLICY_MS)
    retry_budget: RetryBudget | None = None
    breaker: Breaker | None = Field(default_factory=Breaker)
    bulkhead: Bulkhead | None = Field(default_factory=Bulkhead)


class Autoscaling(_Model):
    """Replicas added or removed to keep the service's CPU utilisation near ``target``.

    Every ``interval_s`` the autoscaler reads the mean CPU utilisation of the service's live
    replicas over the last interval and asks for ceil(replicas x utilisation / target)
    replicas, within [``min_replicas``, ``max_replicas``]; new replicas serve after
    ``provisioning_s``; no decision within ``cooldown_s`` of the last one. The service's
    ``replicas`` is the starting count."""

    target_utilisation: float = Field(default=0.6, gt=0, le=1)
    interval_s: float = Field(default=15.0, gt=0, le=MAX_POLICY_S)
    provisioning_s: float = Field(default=60.0, ge=0, le=MAX_POLICY_S)
    cooldown_s: float = Field(default=120.0, ge=0, le=MAX_POLICY_S)
    min_replicas: int = Field(default=1, ge=1, le=L.MAX_REPLICAS)
    max_replicas: int = Field(ge=1, le=L.MAX_REPLICAS)

    @model_validator(mode="after")
    def _fits(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas "
                             f"({self.max_replicas})")
        return self


# ----------------------------------------------------------------------------- compiled


@dataclass(frozen=True)
class BreakerSpec:
    window: int
    min_calls: int
    failure_rate: float
    open_s: float
    probes: int


@dataclass(frozen=True)
class BudgetSpec:
    ratio: float
    window_s: float
    min_per_s: float


@dataclass(frozen=True)
class BulkheadSpec:
    max_concurrent: int
    reserved_for_high: int


@dataclass(frozen=True)
class CallPolicySpec:
    """A compiled call policy (seconds). ``None`` parts are off."""

    timeout_s: float | None
    retries: int
    backoff_initial_s: float
    backoff_max_s: float
    backoff_jitter_s: float
    budget: BudgetSpec | None
    breaker: BreakerSpec | None
    bulkhead: BulkheadSpec | None

    def backoff_s(self, retry: int, u: float) -> float:
        """Pause before retry number ``retry`` (1, 2, ...) given a uniform draw ``u``:
        min(max, initial x 2^(retry-1)) + u x jitter."""
        assert retry >= 1 and 0.0 <= u < 1.0
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** (retry - 1))
        return base + u * self.backoff_jitter_s


@dataclass(frozen=True)
class AutoscalingSpec:
    target: float
    interval_s: float
    provisioning_s: float
    cooldown_s: float
    min_replicas: int
    max_replicas: int


def compile_call_policy(p: CallPolicy | None) -> CallPolicySpec | None:
    """Frozen engine data for a call policy; ``None`` when every part is off (the engine's
    plain call path, no cost)."""
    if p is None:
        return None
    if p.timeout_ms is None and p.retries == 0 and p.breaker is None and p.bulkhead is None:
        return None
    spec = CallPolicySpec(
        timeout_s=p.timeout_ms / 1000.0 if p.timeout_ms is not None else None,
        retries=p.retries,
        backoff_initial_s=p.backoff_initial_ms / 1000.0,
        backoff_max_s=p.backoff_max_ms / 1000.0,
        backoff_jitter_s=p.backoff_jitter_ms / 1000.0,
        budget=BudgetSpec(p.retry_budget.ratio, p.retry_budget.window_s,
                          p.retry_budget.min_per_s) if p.retry_budget is not None else None,
        breaker=BreakerSpec(**p.breaker.model_dump()) if p.breaker is not None else None,
        bulkhead=BulkheadSpec(**p.bulkhead.model_dump()) if p.bulkhead is not None else None,
    )
    assert spec.timeout_s is None or (math.isfinite(spec.timeout_s) and spec.timeout_s > 0)
    return spec


def compile_autoscaling(a: Autoscaling | None) -> AutoscalingSpec | None:
    if a is None:
        return None
    return AutoscalingSpec(a.target_utilisation, a.interval_s, a.provisioning_s, a.cooldown_s,
                           a.min_replicas, a.max_replicas)
