"""The fraud component: asynchronous rules on the event stream, alerts stored and served.

The rules' windows, link indexes and cooldowns are rebuilt on start by replaying the span of
events they cover from the database (:mod:`reference_impl.services.projection`); alerts are
stored once per (rule, player, transaction), so re-evaluating an event already judged by the
previous process adds nothing, and an event it never judged (killed first) raises its alert.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.money import validate_id
from reference_impl.metrics import Registry
from reference_impl.rules import MoneyEvent, RulesEngine
from reference_impl.services.clock import Clock, system_clock
from reference_impl.services.projection import ReplayFence, follow, replay
from reference_impl.storage import Storage

US = 1_000_000


class FraudService:
    """Feeds events to the rules engine's exact windows and link index; stores alerts."""

    def __init__(
        self, storage: Storage, engine: RulesEngine, metrics: Registry | None = None,
        clock: Clock = system_clock, follow_database: bool = False,
    ):
        self.storage, self.engine, self.clock = storage, engine, clock
        self.follow_database = follow_database
        self.metrics = metrics or Registry()
        self.observed = 0
        self._fence: ReplayFence | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Rebuild the rules' state from the last ``engine.memory_s`` of events, in the
        background; live events wait for it. With ``follow_database`` the task then follows
        the database for new events (instead of an event bus)."""
        if self._task is None:
            self._task = asyncio.create_task(self._rebuild())

    async def stop(self) -> None:
        """Stop a rebuild still running."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _rebuild(self) -> None:
        cut = self.clock() + 1  # after every operation stamped so far
        since = cut - int(self.engine.memory_s * US)
        self._fence = await replay(self.storage, since, cut, self._judge)
        self._ready.set()
        if self.follow_database:  # every process sees every event (--workers N)
            await follow(self.storage, self._fence, self._judge)

    async def on_event(self, event: MoneyEvent) -> None:
        """Consumer of the event bus (waits for the rebuild, skips what it replayed)."""
        if not self._ready.is_set():
            await self.start()
            await self._ready.wait()
        if self._fence is None or self._fence.is_new(event):
            await self._judge(event)

    async def _judge(self, event: MoneyEvent) -> None:
        self.observed += 1
        alerts = self.engine.observe(event)
        if alerts:
            await self.storage.add_alerts([a.model_dump(mode="json") for a in alerts])
            for a in alerts:
                self.metrics.alerts.inc(a.rule_id)

    def note_self_exclusion(self, player_id: str, until: float | None) -> None:
        """Tell the link rules a player is self-excluded."""
        self.engine.note_self_exclusion(player_id, until)

    async def alerts(
        self, player_id: str | None = None, limit: int = 100, after: int = 0
    ) -> dict[str, Any]:
        """Stored alerts, oldest first; ``next_after`` pages on."""
        if player_id is not None:
            validate_id(player_id, "player_id")
        if not 1 <= limit <= 1000 or after < 0:
            raise WalletError(ErrorCode.VALIDATION_ERROR, "limit must be 1..1000, after >= 0")
        rows = await self.storage.list_alerts(player_id, limit, after)
        return {"alerts": rows, "next_after": rows[-1]["id"] if len(rows) == limit else None}
