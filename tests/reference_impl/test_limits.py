"""Responsible-gambling limits: timing of changes, and enforcement against a brute-force model."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reference_impl.rules import (
    LimitsRequest,
    LimitsState,
    Outcome,
    RulesEngine,
    RulesFile,
    Usage,
)
from reference_impl.rules.events import WINDOW_SECONDS

DAY = 86_400.0
ENGINE = RulesEngine.from_yaml()


def limits(state: LimitsState, now: float, **req: object) -> LimitsState:
    return ENGINE.update_limits(state, LimitsRequest.model_validate(req), now)


# ---------- timing of limit changes ----------

def test_new_limit_and_decrease_apply_at_once() -> None:
    s = limits(LimitsState(), 100.0, deposit={"24h": 5000})
    assert s.limit("deposit", "24h", 100.0) == 5000
    s = limits(s, 200.0, deposit={"24h": 3000})
    assert s.limit("deposit", "24h", 200.0) == 3000
    assert s.to_public(200.0)["pending"] == []


def test_increase_and_removal_wait_exactly_24h() -> None:
    s = limits(LimitsState(), 0.0, loss={"7d": 1000}, wager={"30d": 9000})
    s = limits(s, 10.0, loss={"7d": 4000}, wager={"30d": None})
    for t in (10.0, 10.0 + DAY - 0.001):
        assert s.limit("loss", "7d", t) == 1000
        assert s.limit("wager", "30d", t) == 9000
    assert s.limit("loss", "7d", 10.0 + DAY) == 4000
    assert s.limit("wager", "30d", 10.0 + DAY) is None
    pending = s.to_public(20.0)["pending"]
    assert {(p["metric"], p["window"], p["limit"], p["effective_at"]) for p in pending} == {
        ("loss", "7d", 4000, 10.0 + DAY), ("wager", "30d", None, 10.0 + DAY),
    }
    after = s.to_public(10.0 + DAY)
    assert after["loss"]["7d"] == 4000 and after["wager"]["30d"] is None
    assert after["pending"] == []


def test_new_request_replaces_pending_increase() -> None:
    s = limits(LimitsState(), 0.0, deposit={"24h": 1000})
    s = limits(s, 0.0, deposit={"24h": 2000})
    s = limits(s, DAY / 2, deposit={"24h": 3000})  # restarts the clock
    assert s.limit("deposit", "24h", DAY) == 1000
    assert s.limit("deposit", "24h", 1.5 * DAY) == 3000
    s2 = limits(s, DAY / 2, deposit={"24h": 1000})  # back to the limit in force: cancel
    assert s2.limit("deposit", "24h", 10 * DAY) == 1000
    s3 = limits(s, DAY / 2, deposit={"24h": 500})  # decrease cancels the pending increase
    assert s3.limit("deposit", "24h", 10 * DAY) == 500


def test_self_exclusion_and_timeout_cannot_be_shortened() -> None:
    s = limits(LimitsState(), 0.0, self_exclusion_until=1000.0, timeout_until=50.0)
    s = limits(s, 1.0, self_exclusion_until=500.0, timeout_until=40.0)
    assert (s.self_exclusion_until, s.timeout_until) == (1000.0, 50.0)
    s = limits(s, 2.0, self_exclusion_until=2000.0)
    assert s.self_exclusion_until == 2000.0
    assert s.self_excluded(1999.9) and not s.self_excluded(2000.0)
    assert s.to_public(60.0)["timeout_until"] is None
    assert s.to_public(60.0)["self_exclusion_until"] == 2000.0


def test_state_round_trips_through_json() -> None:
    s = limits(LimitsState(), 0.0, deposit={"24h": 1000}, self_exclusion_until=99.0)
    s = limits(s, 1.0, deposit={"24h": 5000})
    again = LimitsState.model_validate_json(s.model_dump_json())
    assert again == s
    assert again.limit("deposit", "24h", 1.0 + DAY) == 5000


@pytest.mark.parametrize("body", [
    {"deposit": {"24h": -1}},
    {"deposit": {"1h": 100}},
    {"bonus": {"24h": 100}},
    {"loss": {"24h": 10.5}},
])
def test_bad_limits_request_is_refused(body: dict) -> None:
    with pytest.raises(ValidationError):
        LimitsRequest.model_validate(body)


def test_operator_cap_lowest_applies() -> None:
    text = ENGINE.rules_file.model_dump(mode="json")
    text["limits"]["operator_caps"] = {"deposit": {"24h": 700}}
    engine = RulesEngine(RulesFile.model_validate(text))
    usage = Usage.zero(identity_verified=True)
    assert engine.needs_usage(LimitsState(), "deposit")
    assert engine.check_deposit(LimitsState(), usage, 701, 0.0).code == "LIMIT_EXCEEDED"
    assert engine.check_deposit(LimitsState(), usage, 700, 0.0).allowed
    s = limits(LimitsState(), 0.0, deposit={"24h": 300})
    assert engine.check_deposit(s, usage, 301, 0.0).outcome is Outcome.BLOCK
    s = limits(LimitsState(), 0.0, deposit={"24h": 5000})  # higher than the cap: cap wins
    assert engine.check_deposit(s, usage, 701, 0.0).outcome is Outcome.BLOCK


# ---------- brute-force model of limit timing and enforcement ----------

def oracle_limit(requests: list[tuple[float, str, str, int | None]], metric: str,
                 window: str, t: float) -> int | None:
    """Limit in force at t, defined recursively over the request history: a request that
    does not raise the limit in force when it is made takes effect at once; otherwise the
    limit in force then stays until 24h later, when the request takes effect."""
    mine = [(tk, v) for tk, m, w, v in requests if m == metric and w == window]

    def after(k: int, at: float) -> int | None:
        if k == 0:
            return None
        tk, v = mine[k - 1]
        prev = after(k - 1, tk)
        if v is not None and (prev is None or v <= prev):
            return v
        if v is None and prev is None:
            return None
        return v if at >= tk + DAY else prev

    return after(len(mine), t)


def window_sum(entries: list[tuple[float, int]], now: float, window: str) -> int:
    w = WINDOW_SECONDS[window]
    return sum(a for t, a in entries if now - w < t <= now)


def usage_at(bets: list[tuple[float, int]], wins: list[tuple[float, int]], now: float) -> Usage:
    return Usage(
        deposits=dict.fromkeys(WINDOW_SECONDS, 0),
        stakes={w: window_sum(bets, now, w) for w in WINDOW_SECONDS},
        wins={w: window_sum(wins, now, w) for w in WINDOW_SECONDS},
    )


METRICS = ("loss", "wager")
WINDOWS = tuple(WINDOW_SECONDS)
set_strategy = st.tuples(
    st.just("set"), st.sampled_from(METRICS), st.sampled_from(WINDOWS),
    st.one_of(st.none(), st.sampled_from([0, 5, 10, 20, 50, 100])),
)
op_strategy = st.one_of(
    st.tuples(st.just("advance"),
              st.sampled_from([0.0, 1.0, 3600.0, DAY - 1, DAY, DAY + 1, 7 * DAY, 30 * DAY])),
    set_strategy,
    st.tuples(st.just("bet"), st.sampled_from([1, 5, 10, 20, 50])),
    st.tuples(st.just("bet"), st.sampled_from([1, 5, 10, 20, 50])),
    st.tuples(st.just("win"), st.sampled_from([1, 5, 10, 30])),
)


@settings(max_examples=150, deadline=None)
@given(
    first=st.lists(set_strategy, min_size=1, max_size=4),
    ops=st.lists(op_strategy, min_size=5, max_size=60),
)
def test_accepted_bets_never_exceed_limits_in_force(first: list[tuple], ops: list[tuple]) -> None:
    state = LimitsState()
    now = 0.0
    requests: list[tuple[float, str, str, int | None]] = []
    bets: list[tuple[float, int]] = []
    wins: list[tuple[float, int]] = []
    for op in [*first, *ops]:
        if op[0] == "advance":
            now += op[1]
        elif op[0] == "set":
            _, metric, window, value = op
            state = limits(state, now, **{metric: {window: value}})
            requests.append((now, metric, window, value))
        elif op[0] == "win":
            wins.append((now, op[1]))  # wins are never checked
        else:
            amount = op[1]
            decision = ENGINE.check_bet(state, usage_at(bets, wins, now), amount, now)
            with_bet = [*bets, (now, amount)]
            over = False
            for window in WINDOWS:
                wager = window_sum(with_bet, now, window)
                loss = max(0, wager - window_sum(wins, now, window))
                for metric, used in (("wager", wager), ("loss", loss)):
                    limit = oracle_limit(requests, metric, window, now)
                    over = over or (limit is not None and used > limit)
            assert decision.allowed is not over, (decision, now, requests)
            event("bet blocked" if over else "bet accepted")
            if decision.allowed:
                assert decision.outcome is Outcome.APPROVE
                bets = with_bet
            else:
                assert decision.code == "LIMIT_EXCEEDED"
        for metric in METRICS:
            for window in WINDOWS:
                assert state.limit(metric, window, now) == oracle_limit(
                    requests, metric, window, now
                )


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(op_strategy, max_size=30), probe=st.sampled_from([0.0, DAY - 1, DAY]))
def test_decrease_at_once_increase_after_24h(ops: list[tuple], probe: float) -> None:
    state = LimitsState()
    now = 0.0
    for op in ops:
        if op[0] == "advance":
            now += op[1]
        elif op[0] == "set":
            _, metric, window, value = op
            before = state.limit(metric, window, now)
            state = limits(state, now, **{metric: {window: value}})
            lowered = value is not None and (before is None or value <= before)
            expected_now = value if lowered else before
            assert state.limit(metric, window, now) == expected_now
            later = state.limit(metric, window, now + probe)
            assert later == (value if lowered or probe >= DAY else before)
