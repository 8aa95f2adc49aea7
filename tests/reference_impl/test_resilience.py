"""The internal-call policies: breaker and bulkhead state machines (model-checked with
hypothesis), the policy's validation, and the RPC client composing them against a real
HTTP server that stops answering."""

from __future__ import annotations

import math
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impl.transport.resilience import (
    DEFAULT_POLICY,
    BreakerState,
    Bulkhead,
    CallPolicy,
    CircuitBreaker,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


POLICY = CallPolicy(breaker_window=10, breaker_min_calls=4, breaker_failure_rate=0.5,
                    breaker_open_s=5.0, breaker_probes=2, max_concurrent=8,
                    reserved_for_money=3)


def test_breaker_opens_at_the_failure_rate_and_fails_fast_until_open_s() -> None:
    clock = FakeClock()
    b = CircuitBreaker(POLICY, clock)
    for failed in (False, True, False):
        assert b.allow()
        b.record(failed)
    assert b.state is BreakerState.CLOSED  # 3 calls < min_calls
    assert b.allow()
    b.record(True)  # 2 of 4 failed = 0.5
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    clock.now = 4.2
    assert not b.allow()
    assert b.retry_after_s() == 1
    clock.now = 5.0
    assert b.allow() and b.allow()  # two probes
    assert not b.allow()  # no third while they are in flight
    assert b.state is BreakerState.HALF_OPEN
    b.record(False)
    assert b.state is BreakerState.HALF_OPEN
    b.record(False)
    assert b.state is BreakerState.CLOSED
    assert b.failure_rate() == 0.0


def test_a_failed_probe_reopens_the_breaker_for_a_whole_period() -> None:
    clock = FakeClock()
    b = CircuitBreaker(POLICY, clock)
    for _ in range(4):
        b.allow()
        b.record(True)
    clock.now = 6.0
    assert b.allow()
    b.record(True)
    assert b.state is BreakerState.OPEN
    assert b.retry_after_s() == 5
    clock.now = 10.9
    assert not b.allow()


class BreakerModel:
    """The specification, written plainly: the breaker must agree with it at every step."""

    def __init__(self, p: CallPolicy) -> None:
        self.p, self.state, self.window = p, "closed", deque(maxlen=p.breaker_window)
        self.opened_at, self.in_flight, self.ok = 0.0, 0, 0

    def allow(self, now: float) -> bool:
        if self.state == "open" and now - self.opened_at >= self.p.breaker_open_s:
            self.state, self.in_flight, self.ok = "half_open", 0, 0
        if self.state == "open":
            return False
        if self.state == "half_open":
            if self.in_flight + self.ok >= self.p.breaker_probes:
                return False
            self.in_flight += 1
        return True

    def record(self, failed: bool, now: float) -> None:
        if self.state == "half_open":
            self.in_flight -= 1
            if failed:
                self.state, self.opened_at, self.window = "open", now, deque(
                    maxlen=self.p.breaker_window)
            else:
                self.ok += 1
                if self.ok >= self.p.breaker_probes:
                    self.state = "closed"
                    self.window.clear()
        elif self.state == "closed":
            self.window.append(failed)
            if len(self.window) >= self.p.breaker_min_calls and \
                    sum(self.window) / len(self.window) >= self.p.breaker_failure_rate:
                self.state, self.opened_at = "open", now
                self.window.clear()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3), st.booleans(), st.booleans()), max_size=200))
def test_breaker_agrees_with_its_model(steps: list[tuple[float, bool, bool]]) -> None:
    clock = FakeClock()
    b, model = CircuitBreaker(POLICY, clock), BreakerModel(POLICY)
    pending: list[bool] = []  # calls let through, not yet recorded
    for advance, fails, finish_one in steps:
        clock.now += advance
        if finish_one and pending:
            failed = pending.pop(0)
            b.record(failed)
            model.record(failed, clock.now)
        else:
            allowed = b.allow()
            assert allowed == model.allow(clock.now)
            if allowed:
                pending.append(fails)
        assert b.state.value == model.state
        assert 0 <= b.probes_in_flight <= POLICY.breaker_probes
        assert len(b.outcomes) <= POLICY.breaker_window
        if b.state is BreakerState.OPEN:
            assert 1 <= b.retry_after_s() <= math.ceil(POLICY.breaker_open_s)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=200))
def test_bulkhead_bounds_calls_and_keeps_slots_for_money(ops: list[tuple[bool, bool]]) -> None:
    bh = Bulkhead(POLICY)
    held: list[bool] = []
    for acquire, money in ops:
        if acquire or not held:
            got = bh.try_acquire(money)
            limit = POLICY.max_concurrent - (0 if money else POLICY.reserved_for_money)
            assert got == (len(held) < limit)
            if got:
                held.append(money)
        else:
            held.pop()
            bh.release()
        assert bh.in_flight == len(held) <= POLICY.max_concurrent
        assert sum(not m for m in held) <= POLICY.max_concurrent - POLICY.reserved_for_money


@pytest.mark.parametrize(("fields", "named"), [
    ({"timeout_s": 0}, "timeout_s"), ({"timeout_s": float("nan")}, "timeout_s"),
    ({"retries": -1}, "retries"), ({"retries": 1.5}, "retries"),
    ({"breaker_failure_rate": 1.5}, "breaker_failure_rate"),
    ({"breaker_min_calls": 30}, "breaker_min_calls"),
    ({"reserved_for_money": 64}, "reserved_for_money"),
    ({"max_concurrent": True}, "max_concurrent"),
    ({"timeout_s": "fast"}, "timeout_s"), ({"tiemout_s": 1}, "tiemout_s"),
])
def test_bad_policies_are_refused_naming_the_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        CallPolicy.from_dict(dict(fields))


def test_policy_from_yaml_changes_only_the_fields_given(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("timeout_s: 0.5\nbreaker_open_s: 2\n")
    p = CallPolicy.from_yaml(path)
    assert (p.timeout_s, p.breaker_open_s, p.retries) == (0.5, 2, DEFAULT_POLICY.retries)
    path.write_text("- 1\n")
    with pytest.raises(ValueError, match=r"p\.yaml"):
        CallPolicy.from_yaml(path)
    assert CallPolicy.from_dict(DEFAULT_POLICY.to_dict()) == DEFAULT_POLICY
