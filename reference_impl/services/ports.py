"""What the HTTP layer needs of each component: in-process services and remote proxies alike.

The monolith passes the services themselves; the microservices gateway passes proxies that
call the component over HTTP (``reference_impl.transport.remote``). Both satisfy these.
"""

from __future__ import annotations

from typing import Any, Protocol

from reference_impl.domain.commands import Command
from reference_impl.domain.errors import ErrorCode
from reference_impl.rules import LimitsRequest


class ServiceUnavailable(Exception):
    """A remote component did not answer (down, restarting, timed out): answered with 503.

    The operation may or may not have happened; retrying with the same transaction id is safe.
    ``retry_after_s`` is the ``Retry-After`` the client is answered with.
    """

    retry_after_s: int = 1

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} unavailable: {reason}")
        self.service, self.reason = service, reason

    def to_json(self) -> dict[str, dict[str, str]]:
        """The public error body."""
        return {"error": {"code": ErrorCode.SERVICE_UNAVAILABLE.value, "message": str(self)}}


class PlayerComponent(Protocol):
    """Player accounts, balances, limits, the journal view."""

    async def create(self, player_id: str, currency: str) -> dict[str, Any]:
        """Open a wallet with balance 0."""
        ...

    async def balance(self, player_id: str) -> dict[str, Any]:
        """Balance and currency."""
        ...

    async def transactions(
        self, player_id: str, limit: int = 50, before: int | None = None
    ) -> dict[str, Any]:
        """Ledger entries newest first."""
        ...

    async def set_limits(self, player_id: str, request: LimitsRequest) -> dict[str, Any]:
        """Apply a limits request; the limits in force."""
        ...

    async def limits(self, player_id: str) -> dict[str, Any]:
        """The limits in force and pending."""
        ...

    async def verify_identity(self, player_id: str, verified: bool) -> dict[str, Any]:
        """Record a KYC outcome."""
        ...


class WalletComponent(Protocol):
    """Money commands, exactly once."""

    async def execute(self, cmd: Command) -> dict[str, Any]:
        """Apply ``cmd`` (or replay its first answer)."""
        ...


class FraudComponent(Protocol):
    """Stored fraud alerts."""

    async def alerts(
        self, player_id: str | None = None, limit: int = 100, after: int = 0
    ) -> dict[str, Any]:
        """Alerts oldest first, paged by ``after``."""
        ...


class AnalyticsComponent(Protocol):
    """Running totals of the event stream."""

    async def summary(self) -> dict[str, Any]:
        """Counts and sums by event kind, GGR."""
        ...
