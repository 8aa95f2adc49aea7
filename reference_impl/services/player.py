"""The player component: wallets, balances, limits, the journal view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.money import validate_id
from reference_impl.rules import LimitsRequest, RulesEngine
from reference_impl.services.clock import Clock, system_clock
from reference_impl.services.events import EventBus
from reference_impl.services.gate import dump_limits, parse_limits
from reference_impl.storage import Storage

US = 1_000_000
MAX_PAGE = 500


class PlayerService:
    """Player accounts and their responsible-gambling settings."""

    def __init__(
        self, storage: Storage, engine: RulesEngine, bus: EventBus | None = None,
        clock: Clock = system_clock,
        on_exclusion: Callable[[str, float | None], None] | None = None,
    ) -> None:
        self.storage, self.engine, self.bus, self.clock = storage, engine, bus, clock
        self.on_exclusion = on_exclusion

    async def create(self, player_id: str, currency: str) -> dict[str, Any]:
        """Open a wallet with balance 0."""
        info = await self.storage.create_player(player_id, currency, self.clock())
        return info.to_public()

    async def balance(self, player_id: str) -> dict[str, Any]:
        """Balance and currency."""
        validate_id(player_id, "player_id")
        info = await self.storage.get_player(player_id)
        return {"player_id": player_id, "balance": info.balance, "currency": info.currency}

    async def transactions(
        self, player_id: str, limit: int = 50, before: int | None = None
    ) -> dict[str, Any]:
        """Ledger entries newest first; ``next_before`` pages on."""
        validate_id(player_id, "player_id")
        if not 1 <= limit <= MAX_PAGE:
            raise WalletError(ErrorCode.VALIDATION_ERROR, f"limit must be 1..{MAX_PAGE}")
        entries = await self.storage.transactions(player_id, limit, before)
        next_before = entries[-1].seq if len(entries) == limit and entries[-1].seq > 1 else None
        return {
            "player_id": player_id, "entries": [e.to_public() for e in entries],
            "next_before": next_before,
        }

    async def set_limits(self, player_id: str, request: LimitsRequest) -> dict[str, Any]:
        """Apply a limits request (decreases now, increases after 24h); the limits in force."""
        validate_id(player_id, "player_id")
        now = self.clock() / US
        stored = await self.storage.update_limits(
            player_id,
            lambda old: dump_limits(self.engine.update_limits(parse_limits(old), request, now)),
        )
        state = parse_limits(stored)
        if self.on_exclusion is not None:
            self.on_exclusion(player_id, state.self_exclusion_until)
        return {"player_id": player_id, **state.to_public(now)}

    async def limits(self, player_id: str) -> dict[str, Any]:
        """The limits in force and pending."""
        validate_id(player_id, "player_id")
        info = await self.storage.get_player(player_id)
        return {"player_id": player_id, **parse_limits(info.limits_json).to_public(
            self.clock() / US)}

    async def verify_identity(self, player_id: str, verified: bool) -> dict[str, Any]:
        """Record a KYC outcome (lifts the unverified-identity review)."""
        validate_id(player_id, "player_id")
        await self.storage.set_identity_verified(player_id, verified)
        return {"player_id": player_id, "identity_verified": verified}
