"""The auditor finds every kind of corruption, and passes clean ledgers."""

from __future__ import annotations

from dataclasses import replace

from reference_impl.domain import Bet, Deposit, HotAccounts, MemoryLedger, Win, verify_ledger
from reference_impl.domain.journal import JournalEntry


def _ledger() -> MemoryLedger:
    ledger = MemoryLedger(HotAccounts(house_shards=2))
    for pid in ("a", "b"):
        ledger.create_player(pid, "EUR")
        ledger.apply(Deposit(f"d-{pid}", pid, 1_000), 1)
        ledger.apply(Bet(f"b-{pid}", pid, "r", "g", 300), 2)
        ledger.apply(Win(f"w-{pid}", pid, "r", 100), 3)
    return ledger


def _verify(
    entries: list[JournalEntry], balances: dict[str, int], ledger: MemoryLedger
) -> tuple[bool, str | None]:
    heads = {p.player_id: (p.seq, p.last_hash) for p in ledger.players.values()}
    report = verify_ledger(entries, balances, heads)
    return report.ok, report.first_violation


def test_clean_ledger_is_ok_with_counts() -> None:
    ledger = _ledger()
    report = verify_ledger(ledger.journal, ledger.balances())
    assert report.ok and report.counts["entries"] == 6 and report.counts["streams"] == 2
    assert report.totals["EUR"]["in_play"] == 2_000


def test_tampered_amount_breaks_the_chain() -> None:
    ledger = _ledger()
    entries = list(ledger.journal)
    entries[1] = replace(entries[1], amount=entries[1].amount + 1)
    ok, why = _verify(entries, ledger.balances(), ledger)
    assert not ok and "hash chain broken" in (why or "")


def test_deleted_entry_is_found() -> None:
    ledger = _ledger()
    ok, why = _verify(ledger.journal[1:], ledger.balances(), ledger)
    assert not ok and "seq" in (why or "")


def test_balance_not_matching_projection_is_found() -> None:
    ledger = _ledger()
    balances = ledger.balances()
    balances["player:EUR:a"] += 5
    ok, why = _verify(ledger.journal, balances, ledger)
    assert not ok and "projection" in (why or "")


def test_money_created_out_of_nothing_is_found() -> None:
    ledger = _ledger()
    balances = ledger.balances()
    # both the house and the projection agree, but nobody paid it in
    extra = JournalEntry("x", 1, "t", "win", "house:EUR:0", "player:EUR:x", 5, "EUR", "", 1, "")
    balances["player:EUR:x"] = 5
    balances["house:EUR:0"] += 0
    report = verify_ledger([*ledger.journal, extra], balances)
    assert not report.ok


def test_negative_player_balance_is_found() -> None:
    from reference_impl.domain.journal import GENESIS_HASH, chain_hash

    fields = ("z", 1, "t", "withdrawal", "player:EUR:z", "cash_out:EUR:0", 5, "EUR", "", 1)
    entry = JournalEntry(*fields, chain_hash(GENESIS_HASH, *fields))
    report = verify_ledger([entry], {"player:EUR:z": -5, "cash_out:EUR:0": 5})
    assert not report.ok
    assert "below zero" in (report.first_violation or "")
    assert report.counts["violations"] >= 2  # along the stream and in the stored balance


def test_transfer_between_currencies_is_found() -> None:
    entry = JournalEntry("a", 1, "t", "deposit", "cash_in:USD:0", "player:EUR:a", 5, "EUR", "",
                         1, "")
    report = verify_ledger([entry], {"cash_in:USD:0": -5, "player:EUR:a": 5})
    assert not report.ok
