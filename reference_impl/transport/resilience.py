"""Policies of the internal RPC calls (microservices, hybrid): timeout per call, retries with
exponential backoff and jitter for idempotent methods, a circuit breaker and a bulkhead per
dependency.

The policy is data (:class:`CallPolicy`, frozen, named defaults); the breaker and the bulkhead
are small synchronous state machines with an injected clock, so their behaviour is tested
without a network. :class:`reference_impl.transport.rpc.RpcClient` composes them.

Which calls are retried: :data:`IDEMPOTENT_METHODS` (reads, and ``execute``: a money command
carries its transaction id, so applying it twice is applying it once). ``create``,
``set_limits`` and ``verify_identity`` are retried only when the connection was refused
(nothing was sent).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from reference_impl.services.ports import ServiceUnavailable

IDEMPOTENT_METHODS = frozenset({
    "execute", "audit", "balance", "transactions", "limits", "alerts", "observed", "summary",
})
"""RPC methods safe to send again when the outcome of an attempt is unknown."""

MONEY_METHODS = frozenset({"execute"})
"""RPC methods that may use the bulkhead's reserved slots (money before reporting)."""

SLOW_METHODS = frozenset({"audit"})
"""RPC methods bounded by :attr:`CallPolicy.slow_timeout_s` (a full ledger audit)."""


@dataclass(frozen=True)
class CallPolicy:
    """How a process calls one dependency. The defaults are "what the reference back office
    does"; every field can be set from ``testbed serve --rpc-policy FILE.yaml``."""

    timeout_s: float = 5.0  # per attempt, every method but SLOW_METHODS
    slow_timeout_s: float = 60.0  # per attempt, SLOW_METHODS
    connect_timeout_s: float = 1.0
    retries: int = 2  # extra attempts of an idempotent call
    backoff_initial_s: float = 0.05  # first pause; doubles each retry, plus jitter
    backoff_max_s: float = 1.0
    backoff_jitter_s: float = 0.05
    breaker_window: int = 20  # last calls the failure rate is computed over
    breaker_min_calls: int = 10  # calls in the window before the breaker may open
    breaker_failure_rate: float = 0.5  # open at or above this fraction of failures
    breaker_open_s: float = 5.0  # fail fast this long, then let probes through
    breaker_probes: int = 3  # successful probes in a row that close the breaker
    max_concurrent: int = 64  # calls in flight to the dependency (the bulkhead)
    reserved_for_money: int = 16  # of max_concurrent, only MONEY_METHODS may use these

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value):
                raise ValueError(f"{f.name}: must be a finite number, got {value!r}")
        positive = ("timeout_s", "slow_timeout_s", "connect_timeout_s", "breaker_open_s",
                    "breaker_window", "breaker_min_calls", "breaker_probes", "max_concurrent")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("retries", "backoff_initial_s", "backoff_max_s", "backoff_jitter_s",
                     "reserved_for_money"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        for name in ("retries", "breaker_window", "breaker_min_calls", "breaker_probes",
                     "max_concurrent", "reserved_for_money"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"{name}: must be an integer, got {getattr(self, name)!r}")
        if not 0 < self.breaker_failure_rate <= 1:
            raise ValueError(f"breaker_failure_rate: must be in (0, 1], "
                             f"got {self.breaker_failure_rate!r}")
        if self.breaker_min_calls > self.breaker_window:
            raise ValueError("breaker_min_calls: must be <= breaker_window")
        if self.reserved_for_money >= self.max_concurrent:
            raise ValueError("reserved_for_money: must be < max_concurrent "
                             "(reporting needs at least one slot)")

    def to_dict(self) -> dict[str, Any]:
        """For a child's spec."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallPolicy:
        """A policy from a mapping of field names (unknown names are an error naming them)."""
        if not isinstance(data, dict):
            raise ValueError(f"rpc policy: expected a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"rpc policy: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> CallPolicy:
        """Read a YAML mapping of the fields to change from the defaults; ValueError naming
        the file and the reason otherwise."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
            return cls.from_dict(data)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


DEFAULT_POLICY = CallPolicy()


class BreakerState(Enum):
    """Closed: calls pass. Open: calls fail fast. Half-open: a few probes pass."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class DependencyRejected(ServiceUnavailable):
    """The call was not sent: the breaker is open or the bulkhead is full (answered 503 with
    ``Retry-After``)."""

    def __init__(self, service: str, reason: str, retry_after_s: int) -> None:
        super().__init__(service, reason)
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """Failure rate over the last ``breaker_window`` calls; open for ``breaker_open_s``, then
    half-open: ``breaker_probes`` calls at a time, all succeeding closes it, any failing
    re-opens it."""

    def __init__(self, policy: CallPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy, self.clock = policy, clock
        self.state = BreakerState.CLOSED
        self.outcomes: deque[bool] = deque(maxlen=policy.breaker_window)  # True = failure
        self.opened_at = 0.0
        self.probes_in_flight = 0
        self.probe_successes = 0

    def allow(self) -> bool:
        """Whether a call may be sent now (a half-open probe is counted as in flight)."""
        if self.state is BreakerState.OPEN:
            if self.clock() - self.opened_at < self.policy.breaker_open_s:
                return False
            self.state = BreakerState.HALF_OPEN
            self.probes_in_flight = self.probe_successes = 0
        if self.state is BreakerState.HALF_OPEN:
            if self.probes_in_flight + self.probe_successes >= self.policy.breaker_probes:
                return False
            self.probes_in_flight += 1
        return True

    def record(self, failed: bool) -> None:
        """The outcome of a call :meth:`allow` let through."""
        if self.state is BreakerState.HALF_OPEN:
            self.probes_in_flight = max(0, self.probes_in_flight - 1)
            if failed:
                self._open()
                return
            self.probe_successes += 1
            if self.probe_successes >= self.policy.breaker_probes:
                self.state = BreakerState.CLOSED
                self.outcomes.clear()
            return
        if self.state is BreakerState.OPEN:  # a call sent before the breaker opened
            return
        self.outcomes.append(failed)
        if len(self.outcomes) >= self.policy.breaker_min_calls and \
                self.failure_rate() >= self.policy.breaker_failure_rate:
            self._open()

    def failure_rate(self) -> float:
        """Failures over calls in the window (0 when empty)."""
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0

    def retry_after_s(self) -> int:
        """Whole seconds until probes are let through (at least 1)."""
        left = self.policy.breaker_open_s - (self.clock() - self.opened_at)
        return max(1, math.ceil(left))

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = self.clock()
        self.outcomes.clear()
        self.probes_in_flight = self.probe_successes = 0


class Bulkhead:
    """At most ``max_concurrent`` calls in flight; the last ``reserved_for_money`` slots only
    for money. No queue: a call that finds no slot is shed at once (the caller answers 503)."""

    def __init__(self, policy: CallPolicy) -> None:
        self.capacity = policy.max_concurrent
        self.reporting_capacity = policy.max_concurrent - policy.reserved_for_money
        self.in_flight = 0

    def try_acquire(self, money: bool) -> bool:
        """Take a slot if one is free for this kind of call."""
        limit = self.capacity if money else self.reporting_capacity
        if self.in_flight >= limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by :meth:`try_acquire`."""
        assert self.in_flight > 0, "bulkhead released more than acquired"
        self.in_flight -= 1
