"""Synchronous checks: exclusion, limits, low wagering, unverified identity, needs_usage."""

from __future__ import annotations

import pytest

from reference_impl.rules import Decision, LimitsRequest, LimitsState, Outcome, RulesEngine, Usage

ENGINE = RulesEngine.from_yaml()
DAY = 86_400.0


def usage(**kw: object) -> Usage:
    base = Usage.zero(identity_verified=True).model_dump()
    base.update(kw)
    return Usage.model_validate(base)


def test_player_without_limits_is_approved_everywhere() -> None:
    s, u = LimitsState(), usage()
    assert ENGINE.check_login(s, 0.0) == Decision(Outcome.APPROVE, None, "ok", None)
    for check in (ENGINE.check_bet, ENGINE.check_deposit, ENGINE.check_withdrawal):
        decision = check(s, u, 10_000, 0.0)
        assert decision.allowed and decision.outcome is Outcome.APPROVE


@pytest.mark.parametrize("field", ["self_exclusion_until", "timeout_until"])
def test_exclusion_refuses_login_deposit_bet_but_not_withdrawal(field: str) -> None:
    s = ENGINE.update_limits(LimitsState(), LimitsRequest(**{field: 1000.0}), 0.0)
    u = usage()
    for decision in (
        ENGINE.check_login(s, 999.0),
        ENGINE.check_bet(s, u, 1, 999.0),
        ENGINE.check_deposit(s, u, 1, 999.0),
    ):
        assert decision.outcome is Outcome.BLOCK
        assert decision.code == "PLAYER_BLOCKED" and decision.rule_id
        assert not decision.allowed
    assert ENGINE.check_withdrawal(s, u, 5000, 999.0).outcome is Outcome.APPROVE
    assert ENGINE.check_login(s, 1000.0).allowed  # ends exactly at the end time


def test_block_wins_over_review_and_names_its_rule() -> None:
    s = LimitsState(self_exclusion_until=10.0)
    u = usage(identity_verified=False, cash_movements_24h=250_000)
    decision = ENGINE.check_deposit(s, u, 100, 0.0)
    assert (decision.outcome, decision.rule_id) == (Outcome.BLOCK, "rg-self-exclusion-v1")


def test_deposit_limit_reason_and_lowest_window() -> None:
    s = ENGINE.update_limits(
        LimitsState(), LimitsRequest(deposit={"24h": 5000, "7d": 3000}), 0.0
    )
    u = usage(deposits={"24h": 0, "7d": 2500, "30d": 9000})
    assert ENGINE.check_deposit(s, u, 500, 0.0).allowed
    decision = ENGINE.check_deposit(s, u, 501, 0.0)
    assert decision.code == "LIMIT_EXCEEDED"
    assert decision.reason == "deposit limit 7d: 2500 + 501 > 3000"


def test_loss_limit_counts_wins_and_wager_limit_does_not() -> None:
    s = ENGINE.update_limits(LimitsState(), LimitsRequest(loss={"24h": 1000}), 0.0)
    u = usage(stakes={"24h": 900, "7d": 900, "30d": 900}, wins={"24h": 0, "7d": 0, "30d": 0})
    blocked = ENGINE.check_bet(s, u, 200, 1.0)
    assert blocked.reason == "loss limit 24h: 900 + 200 > 1000"
    winner = usage(stakes={"24h": 900, "7d": 900, "30d": 900},
                   wins={"24h": 500, "7d": 500, "30d": 500})
    assert ENGINE.check_bet(s, winner, 600, 1.0).allowed  # 900 + 600 - 500 = 1000
    assert not ENGINE.check_bet(s, winner, 601, 1.0).allowed
    w = ENGINE.update_limits(LimitsState(), LimitsRequest(wager={"30d": 1000}), 0.0)
    assert not ENGINE.check_bet(w, winner, 101, 1.0).allowed


@pytest.mark.parametrize(("deposits", "stakes", "outcome", "severity"), [
    (50_000, 4_999, Outcome.REVIEW, "high"),    # T/D < 0.1
    (50_000, 5_000, Outcome.REVIEW, "medium"),  # T/D = 0.1 exactly: not high
    (50_000, 49_999, Outcome.REVIEW, "medium"),
    (50_000, 50_000, Outcome.APPROVE, None),    # T/D = 1: wagered enough
    (49_999, 0, Outcome.APPROVE, None),         # below 500 EUR deposited
])
def test_low_wagering_withdrawal(deposits: int, stakes: int, outcome: Outcome,
                                 severity: str | None) -> None:
    u = usage(deposits_since_last_withdrawal=deposits, stakes_since_last_withdrawal=stakes)
    decision = ENGINE.check_withdrawal(LimitsState(), u, 10_000, 0.0)
    assert decision.outcome is outcome and decision.allowed
    assert decision.severity == severity
    if outcome is Outcome.REVIEW:
        assert decision.rule_id == "aml-low-wagering-withdrawal-v1" and decision.code is None


@pytest.mark.parametrize(("verified", "moved", "amount", "outcome"), [
    (False, 150_000, 49_999, Outcome.APPROVE),
    (False, 150_000, 50_000, Outcome.REVIEW),
    (True, 150_000, 50_000, Outcome.APPROVE),
])
def test_unverified_identity_cash_24h(verified: bool, moved: int, amount: int,
                                      outcome: Outcome) -> None:
    u = usage(identity_verified=verified, cash_movements_24h=moved)
    for check in (ENGINE.check_deposit, ENGINE.check_withdrawal):
        decision = check(LimitsState(), u, amount, 0.0)
        assert decision.outcome is outcome
        if outcome is Outcome.REVIEW:
            assert decision.reason_code == "UNVERIFIED_IDENTITY"


def test_needs_usage_lets_the_hot_path_skip_sums() -> None:
    none = LimitsState()
    assert not ENGINE.needs_usage(none, "bet")
    assert not ENGINE.needs_usage(none, "login")
    assert ENGINE.needs_usage(none, "deposit")  # unverified-identity rule reads usage
    assert ENGINE.needs_usage(none, "withdrawal")
    lossy = ENGINE.update_limits(none, LimitsRequest(loss={"7d": 100}), 0.0)
    assert ENGINE.needs_usage(lossy, "bet")
    # a limit pending removal still needs usage until it is gone
    removing = ENGINE.update_limits(lossy, LimitsRequest(loss={"7d": None}), 1.0)
    assert ENGINE.needs_usage(removing, "bet")
    # without usage the bet of a player with no limits is decided on Usage()
    assert ENGINE.check_bet(none, Usage(), 10**9, 0.0).allowed


def test_missing_usage_window_is_an_error_not_an_approval() -> None:
    s = ENGINE.update_limits(LimitsState(), LimitsRequest(wager={"7d": 100}), 0.0)
    with pytest.raises(KeyError, match="7d"):
        ENGINE.check_bet(s, Usage(stakes={"24h": 0}), 1, 0.0)


def test_negative_amount_is_refused() -> None:
    with pytest.raises(ValueError):
        ENGINE.check_bet(LimitsState(), Usage(), -1, 0.0)
