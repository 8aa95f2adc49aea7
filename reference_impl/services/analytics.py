"""The analytics component: running totals per event kind (turnover, payouts, GGR).

The totals are a projection of every money event since the back office began: on start they
are rebuilt from the database (:mod:`reference_impl.services.projection`), then live events
add to them; the summary says ``partial`` until the rebuild is done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from reference_impl.rules import MoneyEvent
from reference_impl.services.clock import Clock, system_clock
from reference_impl.services.projection import ReplayFence, follow, replay
from reference_impl.storage import Storage


class AnalyticsService:
    """Counts and sums of every money event (rebuilt from ``storage`` on :meth:`start`)."""

    def __init__(
        self, storage: Storage | None = None, clock: Clock = system_clock,
        follow_database: bool = False,
    ) -> None:
        self.storage, self.clock, self.follow_database = storage, clock, follow_database
        self.counts: Counter[str] = Counter()
        self.amounts: Counter[str] = Counter()
        self.players: set[str] = set()
        self._fence: ReplayFence | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        if storage is None:  # nothing to rebuild from: live events only
            self._ready.set()

    async def start(self) -> None:
        """Rebuild the totals from the database in the background."""
        if self.storage is not None and self._task is None:
            self._task = asyncio.create_task(self._rebuild(self.storage))

    async def stop(self) -> None:
        """Stop a rebuild still running."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _rebuild(self, storage: Storage) -> None:
        self._fence = await replay(storage, 0, self.clock() + 1, self._count)
        self._ready.set()
        if self.follow_database:  # every process sees every event (--workers N)
            await follow(storage, self._fence, self._count)

    async def on_event(self, event: MoneyEvent) -> None:
        """Consumer of the event bus (waits for the rebuild, skips what it counted)."""
        if not self._ready.is_set():
            await self.start()
            await self._ready.wait()
        if self._fence is None or self._fence.is_new(event):
            await self._count(event)

    async def _count(self, event: MoneyEvent) -> None:
        self.counts[event.kind] += 1
        self.amounts[event.kind] += event.amount
        self.players.add(event.player_id)

    async def summary(self) -> dict[str, Any]:
        """Totals: events and amounts by kind, active players, gross gaming revenue;
        ``partial`` is true while the totals are still being rebuilt after a start."""
        ggr = self.amounts["bet"] - self.amounts["win"] - self.amounts["rollback"]
        return {
            "events": dict(self.counts), "amounts": dict(self.amounts),
            "active_players": len(self.players), "gross_gaming_revenue": ggr,
            "partial": not self._ready.is_set(),
        }
