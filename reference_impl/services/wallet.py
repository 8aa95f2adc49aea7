"""The wallet component: money commands through storage, events to the bus."""

from __future__ import annotations

from typing import Any

from reference_impl.domain import OpResult
from reference_impl.domain.commands import Command, Deposit, Withdrawal
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.rules import MoneyEvent
from reference_impl.services.clock import Clock, system_clock
from reference_impl.services.event_recovery import PublishTracker
from reference_impl.services.events import EventBus
from reference_impl.services.gate import RulesGate
from reference_impl.storage import CommittedTx, Storage

US = 1_000_000
DECLINED_CODES = frozenset(
    {ErrorCode.LIMIT_EXCEEDED, ErrorCode.PLAYER_BLOCKED, ErrorCode.INSUFFICIENT_FUNDS})
"""Refusals of a deposit that the fraud rules see (``deposit_declined`` events); each is kept
in the database (``record_declined``), so recovery and rebuilds find it like an operation."""


class WalletService:
    """Deposits, withdrawals, bets, wins and rollbacks, exactly once."""

    def __init__(
        self, storage: Storage, gate: RulesGate | None, bus: EventBus | None = None,
        clock: Clock = system_clock, tracker: PublishTracker | None = None,
    ) -> None:
        self.storage, self.gate, self.bus, self.clock = storage, gate, bus, clock
        self.tracker = tracker

    async def execute(self, cmd: Command) -> dict[str, Any]:
        """Apply ``cmd``; publish its event when it moved (or was refused) for the first time.

        With a ``tracker``, the operation counts as in flight until its event is handed to
        the bus (see :mod:`reference_impl.services.event_recovery`).
        """
        now = self.clock()
        tracker = self.tracker
        if tracker is not None:
            tracker.begin(now)
        try:
            try:
                result: OpResult = await self.storage.execute(cmd, now, self.gate)
            except WalletError as err:
                if isinstance(cmd, Deposit) and err.code in DECLINED_CODES:
                    await self.storage.record_declined(CommittedTx(
                        cmd.transaction_id, "deposit_declined", cmd.player_id, cmd.amount,
                        now, cmd.instrument, getattr(cmd, "device", None)))
                    await self._publish("deposit_declined", cmd, now)
                raise
            if not result.replayed:
                await self._publish(cmd.kind, cmd, now)
        finally:
            if tracker is not None:
                tracker.end(now)
        return result.to_json()

    async def _publish(self, kind: str, cmd: Command, now_us: int) -> None:
        if self.bus is None:
            return
        instrument = cmd.instrument if isinstance(cmd, Deposit | Withdrawal) else None
        event = MoneyEvent(
            kind=kind,  # type: ignore[arg-type]
            player_id=cmd.player_id, amount=getattr(cmd, "amount", 0), ts=now_us / US,
            transaction_id=cmd.transaction_id, round_id=getattr(cmd, "round_id", None),
            instrument=instrument, device=getattr(cmd, "device", None),
        )
        await self.bus.publish(event)
