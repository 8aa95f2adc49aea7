"""Wiring of the components for one process (the monolith wires all four in-process)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from reference_impl.services.ports import (
    AnalyticsComponent,
    FraudComponent,
    PlayerComponent,
    WalletComponent,
)
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
    follow_database: bool = False
    """Fraud and analytics follow the database instead of the in-process bus, so that every
    process of a multi-worker monolith sees every event (same alerts, same totals)."""

    def storage_settings(self) -> StorageSettings:
        """Storage settings from this config."""
        if self.concurrency not in ("pessimistic", "optimistic"):
            raise ValueError("concurrency must be pessimistic or optimistic")
        return StorageSettings(
            concurrency=self.concurrency,  # type: ignore[arg-type]
            hot=HotAccounts(self.house_shards, self.jackpot_shards), pool_size=self.pool_size,
        )


Probe = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class BackOffice:
    """The four components and what they share in one process.

    Components may be the services themselves or remote proxies (microservices, hybrid);
    then ``storage``/``bus`` may be None, ``auditor`` audits remotely, ``probes`` report the
    health of the remote components and ``closers`` release their connections.
    """

    storage: Storage | None
    bus: EventBus | None
    players: PlayerComponent
    wallet: WalletComponent
    fraud: FraudComponent
    analytics: AnalyticsComponent
    metrics: Registry = field(default_factory=Registry)
    auditor: Callable[[], Awaitable[AuditReport]] | None = None
    probes: dict[str, Probe] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def audit(self) -> AuditReport:
        """Verify the ledger."""
        if self.auditor is not None:
            return await self.auditor()
        if self.storage is None:
            raise RuntimeError("no storage and no remote auditor")
        return await self.storage.audit()

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness of this process and of every remote component it depends on."""
        if not self.probes:
            return True, {"status": "ok"}
        names = list(self.probes)
        answers = await asyncio.gather(*(self.probes[n]() for n in names))
        services = dict(zip(names, answers, strict=True))
        ok = all(a.get("status") == "ok" for a in answers)
        body = {"status": "ok" if ok else "degraded", "pid": os.getpid(), "services": services}
        return ok, body

    async def start(self) -> None:
        """Start event delivery."""
        if self.bus is not None:
            await self.bus.start()

    async def stop(self) -> None:
        """Deliver queued events, close remote connections, then the storage."""
        if self.bus is not None:
            await self.bus.stop()
        for close in self.closers:
            await close()
        if self.storage is not None:
            await self.storage.close()


async def build_backoffice(
    config: BackOfficeConfig, metrics: Registry | None = None, clock: Clock = system_clock,
) -> BackOffice:
    """Open the storage and wire the monolith's components in-process."""
    metrics = metrics or Registry()
    rules_path = Path(config.rules) if config.rules else None
    storage = await open_storage(config.db, config.storage_settings(), metrics)
    bus = InProcessEventBus()
    follow = config.follow_database
    fraud = FraudService(storage, RulesEngine.from_yaml(rules_path), metrics, clock, follow)
    analytics = AnalyticsService(storage, clock, follow)
    if not follow:
        bus.subscribe("fraud", fraud.on_event)
        bus.subscribe("analytics", analytics.on_event)
    engine = RulesEngine.from_yaml(rules_path)
    office = BackOffice(
        storage=storage, bus=bus,
        players=PlayerService(storage, engine, bus, clock, fraud.note_self_exclusion),
        wallet=WalletService(storage, RulesGate(engine), bus, clock),
        fraud=fraud, analytics=analytics, metrics=metrics,
        closers=[fraud.stop, analytics.stop],
    )
    await fraud.start()  # rebuild their state from the database, in the background
    await analytics.start()
    await office.start()
    return office
