"""Unit tests of the pure wallet domain: idempotency, rounds, rollbacks, funds, currency."""

from __future__ import annotations

import pytest

from reference_impl.domain import (
    Bet,
    Deposit,
    ErrorCode,
    HotAccounts,
    MemoryLedger,
    Rollback,
    WalletError,
    Win,
    Withdrawal,
    verify_ledger,
)
from reference_impl.domain.planning import BetState
from reference_impl.rules.decision import Decision, Outcome


def _ledger() -> MemoryLedger:
    ledger = MemoryLedger(HotAccounts(house_shards=4))
    ledger.create_player("p1", "EUR")
    ledger.apply(Deposit("d1", "p1", 1_000), 1)
    return ledger


def _code(ledger: MemoryLedger, cmd: object, now: int = 10) -> ErrorCode:
    with pytest.raises(WalletError) as err:
        ledger.apply(cmd, now)  # type: ignore[arg-type]
    return err.value.code


def _audit_ok(ledger: MemoryLedger) -> None:
    heads = {p.player_id: (p.seq, p.last_hash) for p in ledger.players.values()}
    report = verify_ledger(ledger.journal, ledger.balances(), heads)
    assert report.ok, report.first_violation


def test_replay_returns_first_answer_and_moves_nothing() -> None:
    ledger = _ledger()
    first = ledger.apply(Bet("b1", "p1", "r1", "g1", 300), 2)
    ledger.apply(Deposit("d2", "p1", 50), 3)
    again = ledger.apply(Bet("b1", "p1", "r1", "g1", 300), 4)
    assert again == first and again.balance == 700
    assert ledger.players["p1"].balance == 750
    assert len(ledger.journal) == 3
    _audit_ok(ledger)


def test_same_id_different_body_is_conflict_and_changes_nothing() -> None:
    ledger = _ledger()
    ledger.apply(Bet("b1", "p1", "r1", "g1", 300), 2)
    before = (ledger.balances(), len(ledger.journal))
    assert _code(ledger, Bet("b1", "p1", "r1", "g1", 301)) is ErrorCode.TRANSACTION_CONFLICT
    assert _code(ledger, Deposit("b1", "p1", 300)) is ErrorCode.TRANSACTION_CONFLICT
    assert (ledger.balances(), len(ledger.journal)) == before


def test_insufficient_funds_and_unknown_player() -> None:
    ledger = _ledger()
    assert _code(ledger, Bet("b1", "p1", "r1", "g1", 1_001)) is ErrorCode.INSUFFICIENT_FUNDS
    assert _code(ledger, Withdrawal("w1", "p1", 1_001)) is ErrorCode.INSUFFICIENT_FUNDS
    assert _code(ledger, Bet("b2", "nobody", "r1", "g1", 1)) is ErrorCode.UNKNOWN_PLAYER
    # a refused id is not remembered: it may succeed later
    assert ledger.apply(Bet("b1", "p1", "r1", "g1", 1_000), 3).balance == 0


def test_currency_mismatch() -> None:
    ledger = _ledger()
    assert _code(ledger, Deposit("d9", "p1", 5, currency="USD")) is ErrorCode.CURRENCY_MISMATCH
    assert ledger.apply(Deposit("d9", "p1", 5, currency="EUR"), 3).balance == 1_005


def test_win_settles_open_bets_of_the_round_once() -> None:
    ledger = _ledger()
    ledger.apply(Bet("b1", "p1", "r1", "g1", 100), 2)
    ledger.apply(Bet("b2", "p1", "r1", "g1", 100), 3)
    assert ledger.apply(Win("w1", "p1", "r1", 500), 4).balance == 1_300
    assert ledger.bet_state("b1") is ledger.bet_state("b2") is BetState.SETTLED
    assert _code(ledger, Win("w2", "p1", "r1", 5)) is ErrorCode.BET_ALREADY_SETTLED
    assert _code(ledger, Win("w3", "p1", "r-none", 5)) is ErrorCode.BET_NOT_FOUND
    assert _code(ledger, Rollback("rb", "p1", "r1", "b1")) is ErrorCode.BET_ALREADY_SETTLED
    _audit_ok(ledger)


def test_zero_win_settles_without_a_journal_entry() -> None:
    ledger = _ledger()
    ledger.apply(Bet("b1", "p1", "r1", "g1", 100), 2)
    n = len(ledger.journal)
    assert ledger.apply(Win("w0", "p1", "r1", 0), 3).balance == 900
    assert len(ledger.journal) == n
    assert ledger.bet_state("b1") is BetState.SETTLED


def test_rollback_refunds_at_most_once_and_blocks_the_win() -> None:
    ledger = _ledger()
    ledger.apply(Bet("b1", "p1", "r1", "g1", 400), 2)
    assert ledger.apply(Rollback("rb1", "p1", "r1", "b1"), 3).balance == 1_000
    assert ledger.apply(Rollback("rb2", "p1", "r1", "b1"), 4).balance == 1_000
    assert ledger.apply(Rollback("rb1", "p1", "r1", "b1"), 5).balance == 1_000
    assert _code(ledger, Win("w1", "p1", "r1", 800)) is ErrorCode.TRANSACTION_ROLLED_BACK
    assert ledger.players["p1"].balance == 1_000
    _audit_ok(ledger)


def test_rollback_before_bet_leaves_a_tombstone() -> None:
    ledger = _ledger()
    assert ledger.apply(Rollback("rb1", "p1", "r1", "late"), 2).balance == 1_000
    assert _code(ledger, Bet("late", "p1", "r1", "g1", 100)) is ErrorCode.TRANSACTION_ROLLED_BACK
    assert _code(ledger, Win("w1", "p1", "r1", 100)) is ErrorCode.TRANSACTION_ROLLED_BACK
    assert ledger.players["p1"].balance == 1_000
    assert _code(ledger, Deposit("late", "p1", 100)) is ErrorCode.TRANSACTION_CONFLICT


def test_rollback_of_another_players_bet_or_a_deposit_is_refused() -> None:
    ledger = _ledger()
    ledger.create_player("p2", "EUR")
    ledger.apply(Bet("b1", "p1", "r1", "g1", 100), 2)
    assert _code(ledger, Rollback("rb", "p2", "r1", "b1")) is ErrorCode.BET_NOT_FOUND
    assert _code(ledger, Rollback("rb", "p1", "r1", "d1")) is ErrorCode.BET_NOT_FOUND


def test_verdicts_block_or_hold_checked_operations_only() -> None:
    ledger = _ledger()
    ledger.apply(Bet("b1", "p1", "r1", "g1", 100), 2)

    def block(kind: str, player: object, amount: int) -> Decision:
        return Decision(Outcome.BLOCK, "PLAYER_BLOCKED", "self-excluded", "test")

    assert _code_with(ledger, Bet("b2", "p1", "r1", "g1", 1), block) is ErrorCode.PLAYER_BLOCKED
    assert ledger.apply(Win("w1", "p1", "r1", 50), 3, block).balance == 950

    def review(kind: str, player: object, amount: int) -> Decision:
        return Decision(Outcome.REVIEW, None, "low wagering", "test")

    assert ledger.apply(Withdrawal("wd", "p1", 50), 4, review).status == "review"


def _code_with(ledger: MemoryLedger, cmd: object, fn: object) -> ErrorCode:
    with pytest.raises(WalletError) as err:
        ledger.apply(cmd, 9, fn)  # type: ignore[arg-type]
    return err.value.code


@pytest.mark.parametrize("bad", [
    lambda: Deposit("d", "p1", 0), lambda: Deposit("d", "p1", -5),
    lambda: Deposit("d", "p1", 1.5), lambda: Deposit("d", "p1", True),
    lambda: Deposit("d|x", "p1", 5), lambda: Deposit("d", "p1", 5, currency="XXX"),
    lambda: Bet("b", "p1", "", "g", 5),
    lambda: Win("w", "p1", "r", -1),
])
def test_validation_errors(bad: object) -> None:
    with pytest.raises(WalletError) as err:
        bad()  # type: ignore[operator]
    assert err.value.code is ErrorCode.VALIDATION_ERROR


def test_rollback_of_its_own_id_is_a_conflict() -> None:
    with pytest.raises(WalletError) as err:
        Rollback("r", "p1", "r", "r")
    assert err.value.code is ErrorCode.TRANSACTION_CONFLICT


def test_jackpot_share_of_a_stake_goes_to_the_pool_and_comes_back_on_rollback() -> None:
    ledger = MemoryLedger(HotAccounts(house_shards=2, jackpot_shards=3))
    ledger.create_player("p1", "EUR")
    ledger.apply(Deposit("d1", "p1", 1_000), 1)
    house, pool = ledger.hot.house("EUR", "p1"), ledger.hot.jackpot("EUR", "p1")
    assert ledger.apply(Bet("b1", "p1", "r1", "g", 999, jackpot_bp=150), 2).balance == 1
    legs = [(e.credit_account, e.amount) for e in ledger.journal if e.transaction_id == "b1"]
    assert legs == [(house, 985), (pool, 14)]  # 999 x 1.5% = 14.985, rounded down
    assert ledger.system[house] == 985 and ledger.system[pool] == 14
    assert ledger.apply(Bet("b1", "p1", "r1", "g", 999, jackpot_bp=150), 3).balance == 1
    assert _code(ledger, Bet("b1", "p1", "r1", "g", 999, jackpot_bp=100)) is (
        ErrorCode.TRANSACTION_CONFLICT)
    assert ledger.apply(Rollback("rb1", "p1", "r1", "b1"), 4).balance == 1_000
    assert ledger.system[house] == 0 and ledger.system[pool] == 0
    whole = ledger.apply(Bet("b2", "p1", "r2", "g", 10, jackpot_bp=10_000), 5)
    assert whole.balance == 990 and ledger.system[pool] == 10 and ledger.system[house] == 0
    _audit_ok(ledger)


@pytest.mark.parametrize("bp", [-1, 10_001, 1.5, True, "100"])
def test_jackpot_share_must_be_basis_points(bp: object) -> None:
    with pytest.raises(WalletError) as err:
        Bet("b", "p1", "r", "g", 5, jackpot_bp=bp)  # type: ignore[arg-type]
    assert err.value.code is ErrorCode.VALIDATION_ERROR and "jackpot_bp" in err.value.message


def test_a_bet_without_jackpot_share_keeps_its_fingerprint() -> None:
    assert Bet("b", "p", "r", "g", 5).fingerprint() == Bet("b", "p", "r", "g", 5, None, None,
                                                          0).fingerprint()
    assert Bet("b", "p", "r", "g", 5).fingerprint() != Bet("b", "p", "r", "g", 5,
                                                          jackpot_bp=1).fingerprint()
