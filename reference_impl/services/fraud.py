"""The fraud component: asynchronous rules on the event stream, alerts stored and served."""

from __future__ import annotations

from typing import Any

from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.money import validate_id
from reference_impl.metrics import Registry
from reference_impl.rules import MoneyEvent, RulesEngine
from reference_impl.storage import Storage


class FraudService:
    """Feeds events to the rules engine's exact windows and link index; stores alerts."""

    def __init__(self, storage: Storage, engine: RulesEngine, metrics: Registry | None = None):
        self.storage, self.engine = storage, engine
        self.metrics = metrics or Registry()
        self.observed = 0

    async def on_event(self, event: MoneyEvent) -> None:
        """Consumer of the event bus."""
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
