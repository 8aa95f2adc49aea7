"""The ledger auditor: re-checks every invariant over the whole journal and the balances."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reference_impl.domain.accounts import CASH_KINDS, AccountKind, AccountRef, player_account
from reference_impl.domain.journal import GENESIS_HASH, JournalEntry


@dataclass
class AuditReport:
    """Outcome of an audit: ``ok``, counts, and the first violation found (None when ok)."""

    ok: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    first_violation: str | None = None
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        """Record a violation (the first one is kept)."""
        self.counts["violations"] = self.counts.get("violations", 0) + 1
        if self.ok:
            self.ok = False
            self.first_violation = message

    def to_json(self) -> dict[str, Any]:
        """Public JSON of ``GET /audit/verify``."""
        return {
            "ok": self.ok, "counts": self.counts, "first_violation": self.first_violation,
            "totals": self.totals,
        }


def verify_ledger(
    entries: Iterable[JournalEntry],
    balances: Mapping[str, int],
    heads: Mapping[str, tuple[int, str]] | None = None,
) -> AuditReport:
    """Check the invariants of the ledger.

    ``balances`` maps every stored account id (players included) to its balance; ``heads``
    maps each player to the (seq, hash) stored in its row. Checked: every transfer moves a
    positive amount between two distinct accounts of the entry's currency, one of them the
    stream's player (so it sums to zero per currency); each player's chain is contiguous and
    its hashes recompute; no player balance is ever negative along its stream; stored
    balances equal the projection of the journal; per currency, all balances sum to zero,
    so money in play changes only through cash-in and cash-out.
    """
    report = AuditReport()
    streams, projected, n_entries = project_journal(entries, heads, report)
    if heads is not None:
        for stream, (seq, head_hash) in heads.items():
            if stream not in streams and (seq != 0 or head_hash != GENESIS_HASH):
                report.fail(f"player {stream} has head seq {seq} but no journal entries")
    for account in sorted(set(projected) | set(balances)):
        stored = balances.get(account, 0)
        if stored != projected.get(account, 0):
            report.fail(
                f"account {account}: stored balance {stored} != journal projection "
                f"{projected.get(account, 0)}"
            )
    _check_totals(balances, report)
    report.counts.update({
        "entries": n_entries, "streams": len(streams), "accounts": len(balances),
        "violations": report.counts.get("violations", 0),
    })
    return report


def project_journal(
    entries: Iterable[JournalEntry], heads: Mapping[str, tuple[int, str]] | None,
    report: AuditReport,
) -> tuple[dict[str, list[JournalEntry]], dict[str, int], int]:
    """Check every transfer and chain (recording violations in ``report``); return each
    player's chain in seq order, every account's balance as the journal projects it, and the
    number of entries."""
    streams: dict[str, list[JournalEntry]] = defaultdict(list)
    projected: dict[str, int] = defaultdict(int)
    n_entries = 0
    for entry in entries:
        n_entries += 1
        streams[entry.stream].append(entry)
        check_transfer(entry, report)
        projected[entry.debit_account] -= entry.amount
        projected[entry.credit_account] += entry.amount
    for stream, chain in streams.items():
        check_chain(stream, chain, heads, report)
    return streams, projected, n_entries


def check_transfer(entry: JournalEntry, report: AuditReport) -> None:
    """Record a violation unless ``entry`` is a well-formed transfer of its stream's player."""
    where = f"entry {entry.stream}#{entry.seq} ({entry.transaction_id})"
    if entry.amount <= 0:
        report.fail(f"{where}: amount {entry.amount} is not positive")
    if entry.debit_account == entry.credit_account:
        report.fail(f"{where}: debit and credit are the same account")
    try:
        debit = AccountRef.parse(entry.debit_account)
        credit = AccountRef.parse(entry.credit_account)
    except ValueError:
        report.fail(f"{where}: malformed account id")
        return
    if debit.currency != entry.currency or credit.currency != entry.currency:
        report.fail(f"{where}: accounts are not both in {entry.currency}")
    mine = player_account(entry.stream, entry.currency)
    if mine not in (entry.debit_account, entry.credit_account):
        report.fail(f"{where}: does not touch the stream's player account")


def check_chain(
    stream: str, chain: list[JournalEntry], heads: Mapping[str, tuple[int, str]] | None,
    report: AuditReport,
) -> None:
    """Record a violation unless ``chain`` is contiguous, hashes recompute and the player
    stays at or above zero (and, given ``heads``, ends at the stored head)."""
    chain.sort(key=lambda e: e.seq)
    prev = GENESIS_HASH
    balance = 0
    for expected_seq, entry in enumerate(chain, start=1):
        if entry.seq != expected_seq:
            report.fail(f"player {stream}: seq {entry.seq} where {expected_seq} was expected")
            return
        if entry.expected_hash(prev) != entry.hash:
            report.fail(f"player {stream}: hash chain broken at seq {entry.seq}")
            return
        prev = entry.hash
        mine = player_account(stream, entry.currency)
        balance += entry.amount if entry.credit_account == mine else -entry.amount
        if balance < 0:
            report.fail(f"player {stream}: balance {balance} below zero at seq {entry.seq}")
            return
    if heads is not None:
        head = heads.get(stream)
        if head is None or head != (len(chain), prev):
            report.fail(f"player {stream}: stored chain head {head} != journal end "
                        f"({len(chain)}, {prev[:12]}...)")


def _check_totals(balances: Mapping[str, int], report: AuditReport) -> None:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for account, balance in balances.items():
        try:
            ref = AccountRef.parse(account)
        except ValueError:
            report.fail(f"account {account}: malformed id")
            continue
        if ref.kind is AccountKind.PLAYER and balance < 0:
            report.fail(f"account {account}: negative balance {balance}")
        totals[ref.currency][ref.kind.value] += balance
    for currency, by_kind in totals.items():
        cash = sum(by_kind.get(k.value, 0) for k in CASH_KINDS)
        in_play = sum(v for k, v in by_kind.items() if AccountKind(k) not in CASH_KINDS)
        if in_play + cash != 0:
            report.fail(
                f"{currency}: money in play {in_play} != net cash movements {-cash}"
            )
        report.totals[currency] = {**by_kind, "in_play": in_play, "net_cash_in": -cash}
