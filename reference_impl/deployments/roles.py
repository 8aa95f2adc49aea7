"""The app each process of a multi-process deployment serves, by role.

The components are the same classes as in the monolith; only their wiring differs: remote
proxies over HTTP RPC, and a Redis Streams bus instead of the in-process one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette

from reference_impl.deployments.spec import ChildSpec
from reference_impl.http.app import create_app
from reference_impl.metrics import Registry
from reference_impl.rules import RulesEngine
from reference_impl.services.analytics import AnalyticsService
from reference_impl.services.backoffice import BackOffice, Probe
from reference_impl.services.event_recovery import EventMarks, PublishTracker, recover_events
from reference_impl.services.fraud import FraudService
from reference_impl.services.gate import RulesGate
from reference_impl.services.player import PlayerService
from reference_impl.services.wallet import WalletService
from reference_impl.storage import Storage, open_storage
from reference_impl.transport.broker import BrokerBus, open_event_bus
from reference_impl.transport.remote import (
    RemoteAnalyticsService,
    RemoteFraudService,
    RemotePlayerService,
    RemoteWalletService,
    analytics_methods,
    fraud_methods,
    player_methods,
    wallet_methods,
)
from reference_impl.transport.resilience import CallPolicy
from reference_impl.transport.rpc import RpcClient, RpcMethod, rpc_app

Closer = Callable[[], Awaitable[None]]


def _engine(spec: ChildSpec) -> RulesEngine:
    return RulesEngine.from_yaml(Path(spec.office.rules) if spec.office.rules else None)


async def _storage(spec: ChildSpec, metrics: Registry) -> Storage:
    return await open_storage(spec.office.db, spec.office.storage_settings(), metrics)


def _bus(spec: ChildSpec) -> BrokerBus:
    return open_event_bus(spec.broker, spec.broker_prefix, f"{spec.role}-0")


def _clients(
    spec: ChildSpec, names: tuple[str, ...], metrics: Registry,
) -> dict[str, RpcClient]:
    """One client per dependency, each with its own breaker and bulkhead."""
    policy = CallPolicy.from_dict(spec.rpc_policy)
    return {
        n: RpcClient(n, spec.peers[n], policy=policy, metrics=metrics, token=spec.internal_token)
        for n in names
    }


def _office_parts(clients: dict[str, RpcClient]) -> tuple[dict[str, Probe], list[Closer]]:
    probes: dict[str, Probe] = {n: c.health for n, c in clients.items()}
    closers = [c.close for c in clients.values()]
    return probes, closers


async def _recovering_wallet(storage: Storage, engine: RulesEngine, bus: BrokerBus) -> tuple[
    WalletService, EventMarks,
]:
    """A wallet whose events survive a crash between commit and publish: re-publish what
    dead publishers left behind, then keep this process's mark (bus already started)."""
    tracker = PublishTracker()
    wallet = WalletService(storage, RulesGate(engine), bus, tracker=tracker)
    await recover_events(storage, bus)
    marks = EventMarks(storage, tracker, bus)
    await marks.start()
    return wallet, marks


def gateway_app(spec: ChildSpec) -> Starlette:
    """Microservices' public process: the public API with every component remote."""

    async def factory(metrics: Registry) -> BackOffice:
        clients = _clients(spec, ("player", "wallet", "fraud", "analytics"), metrics)
        wallet = RemoteWalletService(clients["wallet"])
        probes, closers = _office_parts(clients)
        return BackOffice(
            storage=None, bus=None, players=RemotePlayerService(clients["player"]),
            wallet=wallet, fraud=RemoteFraudService(clients["fraud"]),
            analytics=RemoteAnalyticsService(clients["analytics"]), metrics=metrics,
            auditor=wallet.audit, probes=probes, closers=closers,
        )

    return create_app(factory=factory, edge=spec.edge)


def edge_app(spec: ChildSpec) -> Starlette:
    """Hybrid's public process: player and wallet in-process, fraud and analytics remote,
    events to them through the broker."""

    async def factory(metrics: Registry) -> BackOffice:
        storage = await _storage(spec, metrics)
        bus = _bus(spec)
        engine = _engine(spec)
        clients = _clients(spec, ("fraud", "analytics"), metrics)
        probes, closers = _office_parts(clients)
        await bus.start()
        wallet, marks = await _recovering_wallet(storage, engine, bus)
        return BackOffice(
            storage=storage, bus=bus,
            players=PlayerService(storage, engine, bus, on_exclusion=bus.exclusion_notifier()),
            wallet=wallet, fraud=RemoteFraudService(clients["fraud"]),
            analytics=RemoteAnalyticsService(clients["analytics"]), metrics=metrics,
            probes=probes, closers=[marks.stop, *closers],  # after the bus's last flush
        )

    return create_app(factory=factory, edge=spec.edge)


class _Component:
    """Resources of one RPC service process, opened in the app's lifespan."""

    def __init__(self) -> None:
        self.storage: Storage | None = None
        self.bus: BrokerBus | None = None
        self.marks: EventMarks | None = None
        self.stoppers: list[Closer] = []

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.stop()
        for stop in self.stoppers:
            await stop()
        if self.marks is not None:
            await self.marks.stop()
        if self.storage is not None:
            await self.storage.close()


def component_app(spec: ChildSpec) -> Starlette:
    """A player, wallet, fraud or analytics service behind ``POST /rpc/{method}``."""
    metrics = Registry()
    part = _Component()
    methods: dict[str, RpcMethod] = {}

    async def startup() -> None:
        bus = part.bus = _bus(spec)
        if spec.role == "analytics":
            storage = part.storage = await _storage(spec, metrics)
            analytics = AnalyticsService(storage)
            await analytics.start()  # totals rebuilt from the database
            part.stoppers.append(analytics.stop)
            bus.subscribe("analytics", analytics.on_event)
            methods.update(analytics_methods(analytics))
        else:
            storage = part.storage = await _storage(spec, metrics)
            engine = _engine(spec)
            if spec.role == "player":
                methods.update(player_methods(PlayerService(
                    storage, engine, bus, on_exclusion=bus.exclusion_notifier())))
            elif spec.role == "wallet":
                await bus.start()
                wallet, part.marks = await _recovering_wallet(storage, engine, bus)
                methods.update(wallet_methods(wallet, storage))
                return
            else:
                fraud = FraudService(storage, engine, metrics)
                await fraud.start()  # windows rebuilt from the database
                part.stoppers.append(fraud.stop)
                bus.subscribe("fraud", fraud.on_event)
                bus.subscribe_exclusions("fraud", fraud.note_self_exclusion)
                methods.update(fraud_methods(fraud))
        await bus.start()

    return rpc_app(spec.role, methods, metrics=metrics, startup=startup, shutdown=part.close,
                   token=spec.internal_token)


def app_for(spec: ChildSpec) -> Starlette:
    """The app of ``spec.role``."""
    if spec.role == "gateway":
        return gateway_app(spec)
    if spec.role == "edge":
        return edge_app(spec)
    return component_app(spec)
