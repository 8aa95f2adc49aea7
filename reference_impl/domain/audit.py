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
    """Check the invariants of the whole ledger (:func:`verify_increment` from nothing).

    ``balances`` maps every stored account id (players included) to its balance; ``heads``
    maps each player to the (seq, hash) stored in its row. Checked: every transfer moves a
    positive amount between two distinct accounts of the entry's currency, one of them the
    stream's player (so it sums to zero per currency); each player's chain is contiguous and
    its hashes recompute; no player balance is ever negative along its stream; stored
    balances equal the projection of the journal; per currency, all balances sum to zero,
    so money in play changes only through cash-in and cash-out.
    """
    return verify_increment(AuditCheckpoint(), entries, balances, heads).report


@dataclass
class AuditCheckpoint:
    """What earlier audits verified: each chain's verified prefix (player -> (seq, hash) of
    its last verified entry) and every account's balance as that prefix projects it."""

    chains: dict[str, tuple[int, str]] = field(default_factory=dict)
    projection: dict[str, int] = field(default_factory=dict)
    entries: int = 0

    def head(self, stream: str) -> tuple[int, str]:
        """The verified (seq, hash) of ``stream`` (genesis when none)."""
        return self.chains.get(stream, (0, GENESIS_HASH))


@dataclass
class AuditIncrement:
    """An incremental audit's report and the checkpoint it reached (worth saving only when
    the report is ok: a violation is reported again by the next audit)."""

    report: AuditReport
    checkpoint: AuditCheckpoint
    changed_chains: dict[str, tuple[int, str]]
    changed_accounts: dict[str, int]


def verify_increment(
    checkpoint: AuditCheckpoint,
    new_entries: Iterable[JournalEntry],
    balances: Mapping[str, int],
    heads: Mapping[str, tuple[int, str]] | None = None,
) -> AuditIncrement:
    """Check the entries after ``checkpoint``'s verified prefixes, then the stored state.

    Each new entry is checked as a transfer; each chain with new entries continues from its
    verified head (contiguous seq, hashes recomputed, the player never below zero starting
    from its verified balance); the stored heads must equal the chains' ends, and the
    stored balances the projection (checkpoint plus new entries); per currency the balances
    sum to zero. The cost is that of the new entries plus one pass over the players and
    accounts, whatever the length of the journal before the checkpoint.
    """
    report = AuditReport()
    projected: dict[str, int] = defaultdict(int, checkpoint.projection)
    streams: dict[str, list[JournalEntry]] = defaultdict(list)
    touched: set[str] = set()
    n_new = 0
    for entry in new_entries:
        n_new += 1
        streams[entry.stream].append(entry)
        check_transfer(entry, report)
        projected[entry.debit_account] -= entry.amount
        projected[entry.credit_account] += entry.amount
        touched.update((entry.debit_account, entry.credit_account))
    ends: dict[str, tuple[int, str]] = {}
    for stream, chain in streams.items():
        start = checkpoint.head(stream)
        opening = checkpoint.projection.get(player_account(stream, chain[0].currency), 0)
        end = check_chain(stream, chain, heads, report, start, opening)
        if end is not None:
            ends[stream] = end
    if heads is not None:
        for stream, head in heads.items():
            if stream not in streams and tuple(head) != checkpoint.head(stream):
                report.fail(f"player {stream}: stored chain head {tuple(head)} != verified "
                            f"journal end {checkpoint.head(stream)}")
    for account in sorted(set(projected) | set(balances)):
        stored = balances.get(account, 0)
        if stored != projected.get(account, 0):
            report.fail(
                f"account {account}: stored balance {stored} != journal projection "
                f"{projected.get(account, 0)}"
            )
    _check_totals(balances, report)
    total = checkpoint.entries + n_new
    report.counts.update({
        "entries": total, "checked": n_new, "streams": len(set(checkpoint.chains) | set(streams)),
        "accounts": len(balances), "violations": report.counts.get("violations", 0),
    })
    changed_accounts = {a: projected[a] for a in touched}
    reached = AuditCheckpoint({**checkpoint.chains, **ends},
                              {**checkpoint.projection, **changed_accounts}, total)
    return AuditIncrement(report, reached, ends, changed_accounts)


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
    report: AuditReport, start: tuple[int, str] = (0, GENESIS_HASH), opening: int = 0,
) -> tuple[int, str] | None:
    """Record a violation unless ``chain`` continues ``start`` (seq, hash) contiguously,
    hashes recompute and the player (from balance ``opening``) stays at or above zero (and,
    given ``heads``, ends at the stored head). Returns the chain's end, None on a violation."""
    chain.sort(key=lambda e: e.seq)
    seq, prev = start
    balance = opening
    for expected_seq, entry in enumerate(chain, start=seq + 1):
        if entry.seq != expected_seq:
            report.fail(f"player {stream}: seq {entry.seq} where {expected_seq} was expected")
            return None
        if entry.expected_hash(prev) != entry.hash:
            report.fail(f"player {stream}: hash chain broken at seq {entry.seq}")
            return None
        prev = entry.hash
        mine = player_account(stream, entry.currency)
        balance += entry.amount if entry.credit_account == mine else -entry.amount
        if balance < 0:
            report.fail(f"player {stream}: balance {balance} below zero at seq {entry.seq}")
            return None
    end = (seq + len(chain), prev)
    if heads is not None:
        head = heads.get(stream)
        if head is None or tuple(head) != end:
            report.fail(f"player {stream}: stored chain head {head} != journal end "
                        f"({end[0]}, {prev[:12]}...)")
    return end


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
