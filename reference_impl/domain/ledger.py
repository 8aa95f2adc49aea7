"""An in-memory ledger applying the domain's plans: the executable specification.

It is what the SQL adapters are tested against (same commands, same answers, same journal)
and the model of property tests. Pure: no I/O; time is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from reference_impl.domain.accounts import HotAccounts, player_account
from reference_impl.domain.commands import Command, Rollback, Win
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.journal import GENESIS_HASH, JournalEntry
from reference_impl.domain.money import validate_currency, validate_id
from reference_impl.domain.planning import (
    APPROVE,
    BetState,
    OpResult,
    Plan,
    PlayerState,
    Snapshot,
    TxRecord,
    checked_kind,
    plan_operation,
    preflight,
)
from reference_impl.rules.decision import Decision

VerdictFn = Callable[[str, PlayerState, int], Decision]
"""(checked kind, player, amount) -> verdict; the default approves everything."""


class MemoryLedger:
    """Players, system accounts, idempotency records and the journal, in dicts."""

    def __init__(self, hot: HotAccounts | None = None) -> None:
        self.hot = hot or HotAccounts()
        self.players: dict[str, PlayerState] = {}
        self.system: dict[str, int] = {}
        self.records: dict[str, TxRecord] = {}
        self.journal: list[JournalEntry] = []

    def create_player(self, player_id: str, currency: str) -> PlayerState:
        """Open a wallet with balance 0; PLAYER_EXISTS when the id is taken."""
        validate_id(player_id, "player_id")
        validate_currency(currency)
        if player_id in self.players:
            raise WalletError(ErrorCode.PLAYER_EXISTS, f"player {player_id} already exists")
        for account in self.hot.system_accounts(currency):
            self.system.setdefault(account, 0)
        state = PlayerState(player_id, currency, 0, 0, GENESIS_HASH)
        self.players[player_id] = state
        return state

    def snapshot(self, cmd: Command) -> Snapshot:
        """The state ``cmd`` reads."""
        round_bets: tuple[TxRecord, ...] = ()
        if isinstance(cmd, Win):
            round_bets = tuple(
                r for r in self.records.values()
                if r.player_id == cmd.player_id and r.round_id == cmd.round_id
                and r.state is not None
            )
        target = None
        if isinstance(cmd, Rollback):
            target = self.records.get(cmd.rolled_back_transaction_id)
        return Snapshot(
            self.players.get(cmd.player_id), self.records.get(cmd.transaction_id),
            round_bets, target,
        )

    def apply(
        self, cmd: Command, now_us: int, verdict_fn: VerdictFn | None = None,
    ) -> OpResult:
        """Execute ``cmd``: the answer, or WalletError with nothing changed."""
        snap = self.snapshot(cmd)
        replay = preflight(cmd, snap)
        if replay is not None:
            return replay
        verdict = APPROVE
        kind = checked_kind(cmd)
        if kind is not None and verdict_fn is not None:
            assert snap.player is not None
            verdict = verdict_fn(kind, snap.player, getattr(cmd, "amount", 0))
        plan = plan_operation(cmd, snap, now_us, self.hot, verdict)
        self.apply_plan(plan)
        return plan.result

    def apply_plan(self, plan: Plan) -> None:
        """Apply every effect of ``plan``."""
        player = self.players[plan.record.player_id]
        self.players[player.player_id] = PlayerState(
            player.player_id, player.currency, player.balance + plan.player_delta,
            plan.new_seq, plan.new_hash, player.version + 1,
        )
        for account, delta in plan.system_deltas.items():
            self.system[account] = self.system.get(account, 0) + delta
        self.records[plan.record.transaction_id] = plan.record
        if plan.tombstone is not None:
            self.records[plan.tombstone.transaction_id] = plan.tombstone
        for txid, state in plan.bet_updates:
            self.records[txid] = replace(self.records[txid], state=state)
        self.journal.extend(plan.entries)

    def balances(self) -> dict[str, int]:
        """Every account's balance, players included, by account id."""
        result = dict(self.system)
        for p in self.players.values():
            result[player_account(p.player_id, p.currency)] = p.balance
        return result

    def bet_state(self, transaction_id: str) -> BetState | None:
        """State of a bet record (None when unknown)."""
        record = self.records.get(transaction_id)
        return None if record is None else record.state
