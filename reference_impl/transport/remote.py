"""Remote components: proxies with the services' async interfaces, and the method tables
that expose the real services to them (one pair per component, so both sides agree)."""

from __future__ import annotations

from typing import Any

from reference_impl.domain import AuditReport
from reference_impl.domain.commands import Command
from reference_impl.rules import LimitsRequest
from reference_impl.services.analytics import AnalyticsService
from reference_impl.services.fraud import FraudService
from reference_impl.services.player import PlayerService
from reference_impl.services.wallet import WalletService
from reference_impl.storage import Storage
from reference_impl.transport.codec import command_from_json, command_to_json
from reference_impl.transport.rpc import RpcClient, RpcMethod


class RemotePlayerService:
    """:class:`PlayerService` in another process."""

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def create(self, player_id: str, currency: str) -> dict[str, Any]:
        """Open a wallet with balance 0."""
        result: dict[str, Any] = await self.client.call(
            "create", player_id=player_id, currency=currency)
        return result

    async def balance(self, player_id: str) -> dict[str, Any]:
        """Balance and currency."""
        result: dict[str, Any] = await self.client.call("balance", player_id=player_id)
        return result

    async def transactions(
        self, player_id: str, limit: int = 50, before: int | None = None
    ) -> dict[str, Any]:
        """Ledger entries newest first."""
        result: dict[str, Any] = await self.client.call(
            "transactions", player_id=player_id, limit=limit, before=before)
        return result

    async def set_limits(self, player_id: str, request: LimitsRequest) -> dict[str, Any]:
        """Apply a limits request."""
        result: dict[str, Any] = await self.client.call(
            "set_limits", player_id=player_id, request=request.model_dump(mode="json"))
        return result

    async def limits(self, player_id: str) -> dict[str, Any]:
        """The limits in force and pending."""
        result: dict[str, Any] = await self.client.call("limits", player_id=player_id)
        return result

    async def verify_identity(self, player_id: str, verified: bool) -> dict[str, Any]:
        """Record a KYC outcome."""
        result: dict[str, Any] = await self.client.call(
            "verify_identity", player_id=player_id, verified=verified)
        return result


class RemoteWalletService:
    """:class:`WalletService` in another process (which also audits the ledger it owns)."""

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def execute(self, cmd: Command) -> dict[str, Any]:
        """Apply ``cmd`` remotely (safe to retry: commands are idempotent by id)."""
        result: dict[str, Any] = await self.client.call("execute", command=command_to_json(cmd))
        return result

    async def audit(self) -> AuditReport:
        """Verify the ledger in the wallet's process."""
        data = await self.client.call("audit")
        return AuditReport(ok=bool(data["ok"]), counts=dict(data["counts"]),
                           first_violation=data["first_violation"], totals=dict(data["totals"]))


class RemoteFraudService:
    """:class:`FraudService`'s alert queries in another process."""

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def alerts(
        self, player_id: str | None = None, limit: int = 100, after: int = 0
    ) -> dict[str, Any]:
        """Stored alerts, oldest first."""
        result: dict[str, Any] = await self.client.call(
            "alerts", player_id=player_id, limit=limit, after=after)
        return result


class RemoteAnalyticsService:
    """:class:`AnalyticsService` in another process."""

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def summary(self) -> dict[str, Any]:
        """Counts and sums by event kind."""
        result: dict[str, Any] = await self.client.call("summary")
        return result


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def player_methods(service: PlayerService) -> dict[str, RpcMethod]:
    """What :class:`RemotePlayerService` calls."""

    async def create(a: dict[str, Any]) -> Any:
        return await service.create(str(a["player_id"]), str(a["currency"]))

    async def balance(a: dict[str, Any]) -> Any:
        return await service.balance(str(a["player_id"]))

    async def transactions(a: dict[str, Any]) -> Any:
        return await service.transactions(str(a["player_id"]), int(a["limit"]),
                                          _opt_int(a.get("before")))

    async def set_limits(a: dict[str, Any]) -> Any:
        request = LimitsRequest.model_validate(a["request"])
        return await service.set_limits(str(a["player_id"]), request)

    async def limits(a: dict[str, Any]) -> Any:
        return await service.limits(str(a["player_id"]))

    async def verify_identity(a: dict[str, Any]) -> Any:
        return await service.verify_identity(str(a["player_id"]), bool(a["verified"]))

    return {"create": create, "balance": balance, "transactions": transactions,
            "set_limits": set_limits, "limits": limits, "verify_identity": verify_identity}


def wallet_methods(service: WalletService, storage: Storage) -> dict[str, RpcMethod]:
    """What :class:`RemoteWalletService` calls."""

    async def execute(a: dict[str, Any]) -> Any:
        return await service.execute(command_from_json(dict(a["command"])))

    async def audit(a: dict[str, Any]) -> Any:
        return (await storage.audit()).to_json()

    return {"execute": execute, "audit": audit}


def fraud_methods(service: FraudService) -> dict[str, RpcMethod]:
    """What :class:`RemoteFraudService` calls."""

    async def alerts(a: dict[str, Any]) -> Any:
        player = a.get("player_id")
        return await service.alerts(None if player is None else str(player),
                                    int(a.get("limit", 100)), int(a.get("after", 0)))

    async def observed(a: dict[str, Any]) -> Any:
        return {"observed": service.observed}

    return {"alerts": alerts, "observed": observed}


def analytics_methods(service: AnalyticsService) -> dict[str, RpcMethod]:
    """What :class:`RemoteAnalyticsService` calls."""

    async def summary(a: dict[str, Any]) -> Any:
        return await service.summary()

    return {"summary": summary}
