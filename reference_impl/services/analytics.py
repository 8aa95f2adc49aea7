"""The analytics component: running totals per event kind (turnover, payouts, GGR)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from reference_impl.rules import MoneyEvent


class AnalyticsService:
    """Counts and sums of the events it consumed since the process started."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.amounts: Counter[str] = Counter()
        self.players: set[str] = set()

    async def on_event(self, event: MoneyEvent) -> None:
        """Consumer of the event bus."""
        self.counts[event.kind] += 1
        self.amounts[event.kind] += event.amount
        self.players.add(event.player_id)

    async def summary(self) -> dict[str, Any]:
        """Totals: events and amounts by kind, active players, gross gaming revenue."""
        ggr = self.amounts["bet"] - self.amounts["win"] - self.amounts["rollback"]
        return {
            "events": dict(self.counts), "amounts": dict(self.amounts),
            "active_players": len(self.players), "gross_gaming_revenue": ggr,
        }
