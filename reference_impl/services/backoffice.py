"""Wiring of the components for one process (the monolith wires all four in-process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reference_impl.domain import AuditReport
from reference_impl.domain.accounts import HotAccounts
from reference_impl.metrics import Registry
from reference_impl.rules import RulesEngine
from reference_impl.services.analytics import AnalyticsService
from reference_impl.services.clock import Clock, system_clock
from reference_impl.services.events import EventBus, InProcessEventBus
from reference_impl.services.fraud import FraudService
from reference_impl.services.gate import RulesGate
from reference_impl.services.player import PlayerService
from reference_impl.services.wallet import WalletService
from reference_impl.storage import Storage, StorageSettings, open_storage


@dataclass(frozen=True)
class BackOfficeConfig:
    """Settings of ``testbed serve`` that shape the back office (not the HTTP server)."""

    db: str | None = None
    concurrency: str = "pessimistic"
    house_shards: int = 1
    jackpot_shards: int = 1
    rules: str | None = None
    pool_size: int = 16

    def storage_settings(self) -> StorageSettings:
        """Storage settings from this config."""
        if self.concurrency not in ("pessimistic", "optimistic"):
            raise ValueError("concurrency must be pessimistic or optimistic")
        return StorageSettings(
            concurrency=self.concurrency,  # type: ignore[arg-type]
            hot=HotAccounts(self.house_shards, self.jackpot_shards), pool_size=self.pool_size,
        )


@dataclass
class BackOffice:
    """The four components and what they share in one process."""

    storage: Storage
    bus: EventBus
    players: PlayerService
    wallet: WalletService
    fraud: FraudService
    analytics: AnalyticsService
    metrics: Registry = field(default_factory=Registry)

    async def audit(self) -> AuditReport:
        """Verify the ledger."""
        return await self.storage.audit()

    async def start(self) -> None:
        """Start event delivery."""
        await self.bus.start()

    async def stop(self) -> None:
        """Deliver queued events, then close the storage."""
        await self.bus.stop()
        await self.storage.close()


async def build_backoffice(
    config: BackOfficeConfig, metrics: Registry | None = None, clock: Clock = system_clock,
) -> BackOffice:
    """Open the storage and wire the monolith's components in-process."""
    metrics = metrics or Registry()
    rules_path = Path(config.rules) if config.rules else None
    storage = await open_storage(config.db, config.storage_settings(), metrics)
    bus = InProcessEventBus()
    fraud = FraudService(storage, RulesEngine.from_yaml(rules_path), metrics)
    analytics = AnalyticsService()
    bus.subscribe("fraud", fraud.on_event)
    bus.subscribe("analytics", analytics.on_event)
    engine = RulesEngine.from_yaml(rules_path)
    office = BackOffice(
        storage=storage, bus=bus,
        players=PlayerService(storage, engine, bus, clock, fraud.note_self_exclusion),
        wallet=WalletService(storage, RulesGate(engine), bus, clock),
        fraud=fraud, analytics=analytics, metrics=metrics,
    )
    await office.start()
    return office
