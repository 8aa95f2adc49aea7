"""Resilience policies in the engine: circuit breaker, retry budget, bulkhead, the policy
around a call, and the autoscaler.

The policy data comes compiled from :mod:`sim.model.policies`; the state lives here, one
:class:`Client` per (caller replica, callee service), as the reference back office keeps one
``RpcClient`` (breaker, bulkhead) per dependency in each process. :meth:`CallPolicies.call`
wraps one call of the request's path (``sim.engine.path``) in the policy:

1. the bulkhead: a slot among ``max_concurrent`` (the last ``reserved_for_high`` only for
   high-priority operations), else the call is shed at once;
2. the breaker: open, the call is rejected at once; half-open, a probe;
3. the attempt, with its timeout: the caller stops waiting, the attempt goes on as its own
   process (the callee finishes the work, as the reference's HTTP server does);
4. after a failure or timeout, an idempotent call is retried after an exponential backoff
   with jitter, if retries are left and the retry budget allows; a rejection (bulkhead,
   breaker) is never retried (as in the reference).

Every attempt, retry, timeout, rejection and breaker opening is counted per call edge
(``caller->callee``), so retry amplification (attempts per call) can be reported.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, fields
from typing import Any

import simpy
from simpy.events import Event

from sim.engine.output import OK, SHED, TIMED_OUT
from sim.model.policies import (
    BUDGET_BUCKETS,
    PRIORITIES,
    AutoscalingSpec,
    BreakerSpec,
    BudgetSpec,
    CallPolicySpec,
)

HIGH = PRIORITIES["high"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    """Failure rate over the last ``window`` calls (a running count), open for ``open_s``,
    then ``probes`` probes: all succeeding closes it, one failing re-opens it. Same rules as
    the reference back office's ``CircuitBreaker``."""

    __slots__ = ("failures", "opened_at", "opens", "outcomes", "probe_ok", "probes_out", "spec",
                 "state")

    def __init__(self, spec: BreakerSpec):
        self.spec = spec
        self.state = CLOSED
        self.outcomes: deque[bool] = deque()  # True = failure; at most spec.window
        self.failures = 0
        self.opened_at = 0.0
        self.probes_out = 0
        self.probe_ok = 0
        self.opens = 0

    def allow(self, now: float) -> bool:
        """Whether a call may be sent now (a half-open probe is counted as out)."""
        if self.state == OPEN:
            if now - self.opened_at < self.spec.open_s:
                return False
            self.state = HALF_OPEN
            self.probes_out = self.probe_ok = 0
        if self.state == HALF_OPEN:
            if self.probes_out + self.probe_ok >= self.spec.probes:
                return False
            self.probes_out += 1
        return True

    def record(self, failed: bool, now: float) -> None:
        """The outcome of a call :meth:`allow` let through."""
        spec = self.spec
        if self.state == HALF_OPEN:
            self.probes_out = max(0, self.probes_out - 1)
            if failed:
                self._open(now)
                return
            self.probe_ok += 1
            if self.probe_ok >= spec.probes:
                self.state = CLOSED
                self.outcomes.clear()
                self.failures = 0
            return
        if self.state == OPEN:  # a call sent before the breaker opened
            return
        out = self.outcomes
        out.append(failed)
        self.failures += failed
        if len(out) > spec.window:
            self.failures -= out.popleft()
        assert 0 <= self.failures <= len(out) <= spec.window
        if len(out) >= spec.min_calls and self.failures >= spec.failure_rate * len(out):
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.opened_at = now
        self.opens += 1
        self.outcomes.clear()
        self.failures = 0
        self.probes_out = self.probe_ok = 0


class RetryBudget:
    """Retries <= ``min_per_s`` x window + ``ratio`` x calls over the last ``window_s``,
    kept as :data:`BUDGET_BUCKETS` buckets (bounded memory; the window slides a bucket at a
    time)."""

    __slots__ = ("calls", "current", "retries", "spec", "width")

    def __init__(self, spec: BudgetSpec):
        self.spec = spec
        self.width = spec.window_s / BUDGET_BUCKETS
        self.calls = [0] * BUDGET_BUCKETS
        self.retries = [0] * BUDGET_BUCKETS
        self.current = 0  # index (time / width) of the newest bucket

    def _slide(self, now: float) -> int:
        b = int(now / self.width)
        if b > self.current:
            for i in range(self.current + 1, min(b, self.current + BUDGET_BUCKETS) + 1):
                self.calls[i % BUDGET_BUCKETS] = 0
                self.retries[i % BUDGET_BUCKETS] = 0
            self.current = b
        return self.current % BUDGET_BUCKETS

    def deposit(self, now: float) -> None:
        """A call was made (its first attempt)."""
        self.calls[self._slide(now)] += 1

    def withdraw(self, now: float) -> bool:
        """Take one retry if the budget allows it."""
        i = self._slide(now)
        spec = self.spec
        allowed = spec.min_per_s * spec.window_s + spec.ratio * sum(self.calls)
        if sum(self.retries) + 1 > allowed:
            return False
        self.retries[i] += 1
        return True


@dataclass
class EdgeStats:
    """Counts of one call edge (caller service -> callee service) over a run."""

    calls: int = 0           # calls made (first attempts)
    attempts: int = 0        # attempts sent (first attempts and retries)
    retries: int = 0
    timeouts: int = 0        # attempts the caller stopped waiting for
    failures: int = 0        # attempts answered with a failure
    shed: int = 0            # rejected by the bulkhead (no slot)
    rejected: int = 0        # rejected by the open breaker
    budget_denied: int = 0   # retries the budget refused
    breaker_opens: int = 0


class Client:
    """A caller replica's state for one callee: breaker, budget, bulkhead slots in use, and
    the deadlines of its attempts in flight.

    Every attempt of one client has the same timeout, so deadlines come in order: one
    watcher process wakes at the oldest unanswered deadline (one SimPy timer at a time instead
    of one per attempt). The deque holds the attempts started within the last timeout, minus
    those answered in order (dropped as new ones come); its length is bounded by the calls
    a caller can start in one timeout.
    """

    __slots__ = ("breaker", "budget", "deadlines", "in_flight", "stats", "watching")

    def __init__(self, spec: CallPolicySpec, stats: EdgeStats):
        self.breaker = Breaker(spec.breaker) if spec.breaker is not None else None
        self.budget = RetryBudget(spec.budget) if spec.budget is not None else None
        self.in_flight = 0
        self.stats = stats
        self.deadlines: deque[tuple[float, Event]] = deque()
        self.watching = False


Attempt = Callable[[], Generator[Event, Any, int]]  # one attempt of a call -> its outcome


class CallPolicies:
    """The policy around every call of one deployment's run (state per caller replica and
    callee; counts per call edge)."""

    def __init__(self, env: simpy.Environment, service_names: list[str], pyrng: random.Random):
        self.env = env
        self.names = service_names
        self.pyrng = pyrng
        self.clients: dict[tuple[int, int], Client] = {}
        self.edges: dict[tuple[int, int], EdgeStats] = {}
        self._breakers: list[Breaker] = []

    def _client(self, rep: Any, caller: int, callee: int, spec: CallPolicySpec) -> Client:
        key = (id(rep), callee)
        cl = self.clients.get(key)
        if cl is None:
            stats = self.edges.setdefault((caller, callee), EdgeStats())
            cl = self.clients[key] = Client(spec, stats)
            if cl.breaker is not None:
                self._breakers.append(cl.breaker)
        return cl

    def call(self, rep: Any, caller: int, callee: int, spec: CallPolicySpec, priority: int,
             idempotent: bool, attempt: Attempt) -> Generator[Event, Any, int]:
        """One call under ``spec`` from replica ``rep`` of service ``caller``; ``attempt()``
        starts one attempt (hop, callee's worker and work, hop back). The call's outcome
        (``sim.engine.output``): OK, SHED when the bulkhead or the breaker rejected it,
        TIMED_OUT when the caller stopped waiting, else the last attempt's."""
        env = self.env
        cl = self._client(rep, caller, callee, spec)
        st = cl.stats
        st.calls += 1
        if cl.budget is not None:
            cl.budget.deposit(env.now)
        bh = spec.bulkhead
        limit = math.inf
        if bh is not None:
            limit = bh.max_concurrent - (0 if priority == HIGH else bh.reserved_for_high)
        br = cl.breaker
        n = 0
        while True:
            n += 1
            if cl.in_flight >= limit:
                st.shed += 1
                return SHED
            if br is not None and not br.allow(env.now):
                st.rejected += 1
                return SHED
            st.attempts += 1
            cl.in_flight += 1
            if spec.timeout_s is None:
                outcome = yield from attempt()
            else:
                outcome = yield self._timed(cl, attempt, spec.timeout_s)
            cl.in_flight -= 1
            if br is not None:
                br.record(outcome != OK, env.now)
            if outcome == OK:
                return OK
            if outcome == TIMED_OUT:
                st.timeouts += 1
            else:
                st.failures += 1
            if not idempotent or n > spec.retries:
                return outcome
            if cl.budget is not None and not cl.budget.withdraw(env.now):
                st.budget_denied += 1
                return outcome
            st.retries += 1
            yield env.timeout(spec.backoff_s(n, self.pyrng.random()))

    def _timed(self, cl: Client, attempt: Attempt, timeout_s: float) -> Event:
        """An event with the attempt's outcome, or TIMED_OUT at its deadline; the attempt
        runs as its own process and goes on after a timeout (the callee finishes)."""
        env = self.env
        answer = Event(env)

        def answered(proc: Event) -> None:
            if not answer.triggered:
                answer.succeed(proc.value)

        env.process(attempt()).callbacks.append(answered)
        dl = cl.deadlines
        while dl and dl[0][1].triggered:
            dl.popleft()
        dl.append((env.now + timeout_s, answer))
        if not cl.watching:
            cl.watching = True
            env.process(self._watch(cl))
        return answer

    def _watch(self, cl: Client) -> Generator[Event, Any, None]:
        """Time out the attempts of ``cl`` whose deadline passed unanswered."""
        env, dl = self.env, cl.deadlines
        while dl:
            deadline, answer = dl[0]
            if answer.triggered:
                dl.popleft()
            elif deadline > env.now:
                yield env.timeout(deadline - env.now)
            else:
                dl.popleft()
                answer.succeed(TIMED_OUT)
        cl.watching = False

    def counts(self) -> dict[str, float]:
        """Totals and per-edge counts, flat (``retries``, ``edge:gateway->fraud:retries``)."""
        for e in self.edges.values():
            e.breaker_opens = 0
        for (_, _callee), cl in self.clients.items():
            if cl.breaker is not None:
                cl.stats.breaker_opens += cl.breaker.opens
        out: dict[str, float] = {}
        names = [f.name for f in fields(EdgeStats)]
        for n in names:
            out[n] = float(sum(getattr(e, n) for e in self.edges.values()))
        for (a, b), e in sorted(self.edges.items()):
            tag = f"edge:{self.names[a]}->{self.names[b]}"
            for n in names:
                out[f"{tag}:{n}"] = float(getattr(e, n))
        return out


# ----------------------------------------------------------------------------- autoscaling


@dataclass
class ScaleEvent:
    """Replicas of ``service`` changed at ``t_s`` (decided at ``decided_s``: earlier by the
    provisioning delay for replicas added)."""

    t_s: float
    decided_s: float
    service: str
    replicas: int   # live replicas after the event
    added: int      # > 0 added, < 0 removed


class Autoscaler:
    """One service's autoscaler: a SimPy process reading the CPU utilisation of the live
    replicas every ``interval_s`` and setting the live count through ``set_live``."""

    def __init__(self, env: simpy.Environment, name: str, spec: AutoscalingSpec,
                 cpus: list[Any], cores: int, live: int, set_live: Callable[[int], None]):
        assert spec.min_replicas <= live <= spec.max_replicas <= len(cpus)
        self.env, self.name, self.spec, self.cpus, self.cores = env, name, spec, cpus, cores
        self.live = live
        self.pending = 0      # replicas provisioning
        self.set_live = set_live
        self.added = 0
        self.removed = 0
        self.events: list[ScaleEvent] = []
        self._last_decision = -math.inf

    def run(self, duration: float) -> Generator[Event, Any, None]:
        env, spec = self.env, self.spec
        busy0 = [c.snapshot()[0] for c in self.cpus]
        while env.now + spec.interval_s <= duration:
            yield env.timeout(spec.interval_s)
            busy = [c.snapshot()[0] for c in self.cpus]
            used = sum(busy[i] - busy0[i] for i in range(self.live))
            busy0 = busy
            util = used / (self.cores * self.live * spec.interval_s)
            want = min(spec.max_replicas,
                       max(spec.min_replicas, math.ceil(self.live * util / spec.target - 1e-9)))
            if env.now - self._last_decision < spec.cooldown_s:
                continue
            if want > self.live + self.pending:
                n = want - self.live - self.pending
                self.pending += n
                self._last_decision = env.now
                env.process(self._provision(n))
            elif want < self.live and self.pending == 0:
                self._last_decision = env.now
                self.removed += self.live - want
                self.events.append(ScaleEvent(env.now, env.now, self.name, want, want - self.live))
                self.live = want
                self.set_live(want)

    def _provision(self, n: int) -> Generator[Event, Any, None]:
        decided = self.env.now
        yield self.env.timeout(self.spec.provisioning_s)
        self.pending -= n
        self.live += n
        self.added += n
        assert self.live <= self.spec.max_replicas
        self.set_live(self.live)
        self.events.append(ScaleEvent(self.env.now, decided, self.name, self.live, n))
