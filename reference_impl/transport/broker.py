"""Pick the broker event bus from a ``--broker`` URL: Redis Streams or NATS JetStream."""

from __future__ import annotations

import hashlib
from typing import Protocol

from reference_impl.rules import MoneyEvent
from reference_impl.services.events import Handler
from reference_impl.transport.redis_streams import BusStats, ExclusionHandler

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
NATS_SCHEMES = ("nats://", "tls://")


class BrokerBus(Protocol):
    """An EventBus across processes, with self-exclusion notices and delivery statistics."""

    stats: BusStats

    def subscribe(self, name: str, handler: Handler) -> None:
        """Money events to ``handler`` in consumer group ``name``."""
        ...

    def subscribe_exclusions(self, name: str, handler: ExclusionHandler) -> None:
        """Self-exclusion notices to ``handler`` in consumer group ``name``."""
        ...

    async def publish(self, event: MoneyEvent) -> None:
        """Publish a money event."""
        ...

    async def publish_exclusion(self, player_id: str, until: float | None) -> None:
        """Publish a self-exclusion notice."""
        ...

    def exclusion_notifier(self) -> ExclusionHandler:
        """Synchronous callback publishing notices in the background."""
        ...

    def oldest_unsent_ts(self) -> float | None:
        """Timestamp of the oldest money event not yet handed to the broker."""
        ...

    async def start(self) -> None:
        """Connect and start the consumers."""
        ...

    async def stop(self) -> None:
        """Stop the consumers and disconnect."""
        ...

    async def purge(self) -> None:
        """Delete what this bus stored on the broker."""
        ...


def broker_prefix(db_url: str | None) -> str:
    """Key prefix of one deployment's streams: derived from its database, so a restarted
    deployment resumes its own stream and consumer groups, and others do not mix in."""
    digest = hashlib.sha1((db_url or "sqlite:///data/wallet.db").encode()).hexdigest()
    return f"testbed:{digest[:12]}"


def check_broker_url(url: str) -> None:
    """ValueError unless ``url`` names a supported broker."""
    if not url.startswith(REDIS_SCHEMES + NATS_SCHEMES):
        raise ValueError(f"--broker must be redis://host:port/db or nats://host:port, "
                         f"got {url!r}")


def open_event_bus(url: str, prefix: str, consumer: str) -> BrokerBus:
    """The bus for ``url`` (not started: subscribe first, then ``start``)."""
    check_broker_url(url)
    if url.startswith(NATS_SCHEMES):
        from reference_impl.transport.nats_jetstream import NatsJetStreamEventBus

        return NatsJetStreamEventBus(url, prefix, consumer)
    from reference_impl.transport.redis_streams import RedisStreamsEventBus

    return RedisStreamsEventBus(url, prefix, consumer)
