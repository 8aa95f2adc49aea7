"""The wallet's decisions as pure functions: a snapshot of state in, a plan of effects out.

Storage adapters load a :class:`Snapshot` inside their transaction, call :func:`preflight`
(replay, conflict, tombstone, currency), ask the rules for their ``Decision`` when the
operation is checked, call :func:`plan_operation` and apply the :class:`Plan` atomically.
The in-memory :class:`~reference_impl.domain.ledger.MemoryLedger` applies the same plans and
is the executable specification the SQL adapters are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from reference_impl.domain.accounts import HotAccounts, player_account
from reference_impl.domain.commands import Bet, Command, Deposit, Rollback, Win, Withdrawal
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.journal import JournalEntry, chain_hash
from reference_impl.rules.decision import APPROVED, Decision, Outcome


class BetState(StrEnum):
    """Life of a bet record: open until a win settles it or a rollback refunds it."""

    OPEN = "open"
    SETTLED = "settled"
    ROLLED_BACK = "rolled_back"
    TOMBSTONE = "tombstone"  # rollback of a bet never seen: the late bet moves nothing


TOMBSTONE_KIND = "tombstone"


@dataclass(frozen=True)
class PlayerState:
    """The player row as read inside the transaction."""

    player_id: str
    currency: str
    balance: int
    seq: int
    last_hash: str
    version: int = 0


@dataclass(frozen=True)
class OpResult:
    """Answer of a money operation (stored for replays)."""

    transaction_id: str
    status: str
    balance: int
    currency: str
    replayed: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Public JSON of the answer."""
        return {
            "transaction_id": self.transaction_id, "status": self.status,
            "balance": self.balance, "currency": self.currency,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpResult:
        """Inverse of :meth:`to_json`."""
        return cls(data["transaction_id"], data["status"], data["balance"], data["currency"])


@dataclass(frozen=True)
class TxRecord:
    """An idempotency record (unique by transaction id); bets carry their state."""

    transaction_id: str
    kind: str
    player_id: str
    fingerprint: str
    round_id: str = ""
    amount: int = 0
    state: BetState | None = None
    result: OpResult | None = None
    jackpot: int = 0  # of a bet: the part of ``amount`` that went to the jackpot pool
    instrument: str | None = None  # of a deposit or withdrawal: the payment instrument
    device: str | None = None  # the player's device, when the command said


@dataclass(frozen=True)
class Snapshot:
    """State an operation reads: the player, the record of its id, round bets, rollback target."""

    player: PlayerState | None
    existing: TxRecord | None = None
    round_bets: tuple[TxRecord, ...] = ()
    target: TxRecord | None = None


APPROVE: Decision = APPROVED
"""The verdict of an operation no rule checks (the rules' own vocabulary: one ``Decision``
type from the rules to the planner and the storage)."""


@dataclass(frozen=True)
class Plan:
    """Every effect of one operation, to be applied atomically."""

    result: OpResult
    record: TxRecord
    entries: tuple[JournalEntry, ...] = ()
    player_delta: int = 0
    system_deltas: dict[str, int] = field(default_factory=dict)
    new_seq: int = 0
    new_hash: str = ""
    tombstone: TxRecord | None = None
    bet_updates: tuple[tuple[str, BetState], ...] = ()


def checked_kind(cmd: Command) -> str | None:
    """The rules check an operation needs ("bet", "deposit", "withdrawal") or None."""
    return cmd.kind if isinstance(cmd, Bet | Deposit | Withdrawal) else None


def preflight(cmd: Command, snap: Snapshot) -> OpResult | None:
    """Checks before any rule or money: returns the stored answer of a replay, else None.

    Raises UNKNOWN_PLAYER, TRANSACTION_CONFLICT, TRANSACTION_ROLLED_BACK (a bet whose id
    was rolled back before it arrived: documented choice, the late bet is refused and moves
    nothing) and CURRENCY_MISMATCH.
    """
    player = snap.player
    if player is None:
        raise WalletError(ErrorCode.UNKNOWN_PLAYER, f"player {cmd.player_id} does not exist")
    existing = snap.existing
    if existing is not None:
        if (
            existing.kind == TOMBSTONE_KIND and isinstance(cmd, Bet)
            and existing.player_id == cmd.player_id
        ):
            raise WalletError(
                ErrorCode.TRANSACTION_ROLLED_BACK,
                f"bet {cmd.transaction_id} was rolled back before it arrived",
            )
        if existing.fingerprint != cmd.fingerprint() or existing.result is None:
            raise WalletError(
                ErrorCode.TRANSACTION_CONFLICT,
                f"transaction {cmd.transaction_id} already exists with a different body",
            )
        return replace(existing.result, replayed=True)
    currency = getattr(cmd, "currency", None)
    if currency is not None and currency != player.currency:
        raise WalletError(
            ErrorCode.CURRENCY_MISMATCH,
            f"player {player.player_id} plays in {player.currency}, not {currency}",
        )
    return None


def plan_operation(
    cmd: Command, snap: Snapshot, now_us: int, hot: HotAccounts, verdict: Decision = APPROVE,
) -> Plan:
    """Plan a new (non-replayed) operation; raise WalletError when it is refused.

    Call only after :func:`preflight` returned None. ``verdict`` is the rules' answer for
    bets, deposits and withdrawals (wins and rollbacks are never checked: the money is owed).
    """
    player = snap.player
    assert player is not None, "preflight rejects unknown players"
    if isinstance(cmd, Bet | Deposit | Withdrawal) and not verdict.allowed:
        raise WalletError(verdict.code or ErrorCode.PLAYER_BLOCKED, verdict.reason or "blocked")
    if isinstance(cmd, Bet):
        return _plan_bet(cmd, player, now_us, hot)
    if isinstance(cmd, Deposit):
        status = "review" if verdict.outcome is Outcome.REVIEW else "ok"
        return _transfer_plan(
            cmd, player, now_us, hot.cash_in(player.currency), cmd.amount, status, "",
        )
    if isinstance(cmd, Withdrawal):
        _require_funds(player, cmd.amount)
        status = "review" if verdict.outcome is Outcome.REVIEW else "ok"
        return _transfer_plan(
            cmd, player, now_us, hot.cash_out(player.currency), -cmd.amount, status, "",
        )
    if isinstance(cmd, Win):
        return _plan_win(cmd, snap, player, now_us, hot)
    return _plan_rollback(cmd, snap, player, now_us, hot)


def _require_funds(player: PlayerState, amount: int) -> None:
    if player.balance < amount:
        raise WalletError(
            ErrorCode.INSUFFICIENT_FUNDS,
            f"balance {player.balance} is below the amount {amount}",
        )


def _stake_legs(
    player: PlayerState, hot: HotAccounts, amount: int, jackpot: int, sign: int,
) -> list[tuple[str, int]]:
    """The player's side of a stake (sign -1) or of its refund (+1): house and jackpot."""
    return [
        (hot.house(player.currency, player.player_id), sign * (amount - jackpot)),
        (hot.jackpot(player.currency, player.player_id), sign * jackpot),
    ]


def _plan_bet(cmd: Bet, player: PlayerState, now_us: int, hot: HotAccounts) -> Plan:
    _require_funds(player, cmd.amount)
    plan = _legs_plan(
        cmd, player, now_us, _stake_legs(player, hot, cmd.amount, cmd.jackpot_contribution, -1),
        "ok", cmd.round_id, state=BetState.OPEN, amount=cmd.amount,
    )
    return _replace(plan, record=replace(plan.record, jackpot=cmd.jackpot_contribution))


def _plan_win(
    cmd: Win, snap: Snapshot, player: PlayerState, now_us: int, hot: HotAccounts,
) -> Plan:
    bets = [b for b in snap.round_bets if b.player_id == cmd.player_id]
    open_bets = [b for b in bets if b.state is BetState.OPEN]
    if not open_bets:
        if not bets:
            raise WalletError(
                ErrorCode.BET_NOT_FOUND, f"round {cmd.round_id} has no bet of {cmd.player_id}"
            )
        if any(b.state is BetState.SETTLED for b in bets):
            raise WalletError(
                ErrorCode.BET_ALREADY_SETTLED, f"round {cmd.round_id} is already settled"
            )
        raise WalletError(
            ErrorCode.TRANSACTION_ROLLED_BACK, f"the bets of round {cmd.round_id} were rolled back"
        )
    plan = _transfer_plan(
        cmd, player, now_us, hot.house(player.currency, player.player_id), cmd.amount, "ok",
        cmd.round_id,
    )
    updates = tuple((b.transaction_id, BetState.SETTLED) for b in open_bets)
    return _replace(plan, bet_updates=updates)


def _plan_rollback(
    cmd: Rollback, snap: Snapshot, player: PlayerState, now_us: int, hot: HotAccounts,
) -> Plan:
    target = snap.target
    if target is None:
        plan = _transfer_plan(cmd, player, now_us, "", 0, "ok", cmd.round_id)
        tombstone = TxRecord(
            transaction_id=cmd.rolled_back_transaction_id, kind=TOMBSTONE_KIND,
            player_id=cmd.player_id, fingerprint="", round_id=cmd.round_id,
            state=BetState.TOMBSTONE,
        )
        return _replace(plan, tombstone=tombstone)
    if target.player_id != cmd.player_id or target.kind not in ("bet", TOMBSTONE_KIND):
        raise WalletError(
            ErrorCode.BET_NOT_FOUND,
            f"{cmd.rolled_back_transaction_id} is not a bet of {cmd.player_id}",
        )
    if target.round_id != cmd.round_id:
        raise WalletError(
            ErrorCode.BET_NOT_FOUND,
            f"{cmd.rolled_back_transaction_id} is not a bet of round {cmd.round_id}",
        )
    if target.state is BetState.SETTLED:
        raise WalletError(
            ErrorCode.BET_ALREADY_SETTLED, f"bet {target.transaction_id} is already settled"
        )
    if target.state is not BetState.OPEN:  # rolled back already, or a tombstone: no effect
        return _transfer_plan(cmd, player, now_us, "", 0, "ok", cmd.round_id)
    plan = _legs_plan(
        cmd, player, now_us, _stake_legs(player, hot, target.amount, target.jackpot, +1), "ok",
        cmd.round_id, amount=target.amount,
    )
    return _replace(plan, bet_updates=((target.transaction_id, BetState.ROLLED_BACK),))


def _transfer_plan(
    cmd: Command, player: PlayerState, now_us: int, counter_account: str, player_delta: int,
    status: str, round_id: str, *, state: BetState | None = None, amount: int | None = None,
) -> Plan:
    """One transfer between the player and ``counter_account`` (none when delta is 0)."""
    return _legs_plan(
        cmd, player, now_us, [(counter_account, player_delta)], status, round_id,
        state=state, amount=amount,
    )


def _legs_plan(
    cmd: Command, player: PlayerState, now_us: int, legs: list[tuple[str, int]], status: str,
    round_id: str, *, state: BetState | None = None, amount: int | None = None,
) -> Plan:
    """One transfer per leg (counter account, player delta), each a journal entry extending
    the player's chain in order; legs of delta 0 post nothing."""
    mine = player_account(player.player_id, player.currency)
    entries: list[JournalEntry] = []
    system_deltas: dict[str, int] = {}
    seq, last_hash = player.seq, player.last_hash
    total = 0
    for counter_account, player_delta in legs:
        if player_delta == 0:
            continue
        debit, credit = (mine, counter_account) if player_delta < 0 else (counter_account, mine)
        seq += 1
        value = abs(player_delta)
        last_hash = chain_hash(
            last_hash, player.player_id, seq, cmd.transaction_id, cmd.kind, debit, credit,
            value, player.currency, round_id, now_us,
        )
        entries.append(JournalEntry(
            player.player_id, seq, cmd.transaction_id, cmd.kind, debit, credit, value,
            player.currency, round_id, now_us, last_hash,
        ))
        system_deltas[counter_account] = system_deltas.get(counter_account, 0) - player_delta
        total += player_delta
    result = OpResult(cmd.transaction_id, status, player.balance + total, player.currency)
    record = TxRecord(
        transaction_id=cmd.transaction_id, kind=cmd.kind, player_id=player.player_id,
        fingerprint=cmd.fingerprint(), round_id=round_id,
        amount=abs(total) if amount is None else amount, state=state, result=result,
        instrument=getattr(cmd, "instrument", None), device=getattr(cmd, "device", None),
    )
    return Plan(
        result=result, record=record, entries=tuple(entries), player_delta=total,
        system_deltas=system_deltas, new_seq=seq, new_hash=last_hash,
    )


def _replace(plan: Plan, **changes: Any) -> Plan:
    return replace(plan, **changes)
