"""Balances as a projection of the journal: recompute them and plan the corrections.

The journal is the source of truth; the ``balance`` of every player and system account and
each player's chain head (seq, last hash) are derived data. :func:`plan_rebuild` recomputes
them from the entries and lists what differs from what is stored. It refuses (``ok`` False)
when the journal itself is damaged (a broken hash chain, a malformed transfer, a player
going below zero), since a damaged journal cannot be the source of anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reference_impl.domain.accounts import is_player_account
from reference_impl.domain.audit import AuditReport, project_journal
from reference_impl.domain.journal import GENESIS_HASH, JournalEntry


@dataclass(frozen=True)
class Correction:
    """One stored value that differs from the journal's projection."""

    account: str
    field: str
    stored: Any
    projected: Any

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"account": self.account, "field": self.field, "stored": self.stored,
                "projected": self.projected}


@dataclass
class RebuildPlan:
    """What a rebuild would write: new balances and heads, and the differences found."""

    ok: bool
    refusal: str | None = None
    balances: dict[str, int] = field(default_factory=dict)
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    corrections: list[Correction] = field(default_factory=list)
    entries: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "ok": self.ok, "refusal": self.refusal, "entries": self.entries,
            "accounts": len(self.balances), "players": len(self.heads),
            "corrections": [c.to_json() for c in self.corrections],
        }


def plan_rebuild(
    entries: Iterable[JournalEntry],
    stored_balances: Mapping[str, int],
    stored_heads: Mapping[str, tuple[int, str]],
) -> RebuildPlan:
    """Project the journal and compare it with the stored balances and chain heads.

    ``stored_balances`` maps every stored account id (players as ``player:CUR:id``) to its
    balance; ``stored_heads`` maps each player id to its stored (seq, last hash). Accounts
    absent from the journal project to 0, players without entries to the genesis head.
    """
    report = AuditReport()
    streams, projected, n = project_journal(entries, None, report)
    for stream in streams:
        if stream not in stored_heads:
            report.fail(f"player {stream} has journal entries but no player row")
    for account in projected:
        if is_player_account(account) and account not in stored_balances:
            report.fail(f"journal posts to {account}, which no player row holds")
    if not report.ok:
        return RebuildPlan(ok=False, refusal=report.first_violation, entries=n)
    plan = RebuildPlan(ok=True, entries=n)
    for account in sorted(set(projected) | set(stored_balances)):
        value = projected.get(account, 0)
        plan.balances[account] = value
        stored = stored_balances.get(account)
        if stored != value:
            plan.corrections.append(Correction(account, "balance", stored, value))
    for player, stored_head in sorted(stored_heads.items()):
        chain = streams.get(player, [])
        head = (len(chain), chain[-1].hash) if chain else (0, GENESIS_HASH)
        plan.heads[player] = head
        if tuple(stored_head) != head:
            plan.corrections.append(Correction(player, "head", list(stored_head), list(head)))
    return plan

