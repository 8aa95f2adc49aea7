"""Pick the broker event bus from a ``--broker`` URL."""

from __future__ import annotations

import hashlib

from reference_impl.transport.redis_streams import RedisStreamsEventBus

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
BROKER_SCHEMES = ("redis://", "rediss://", "unix://")


def broker_prefix(db_url: str | None) -> str:
    """Key prefix of one deployment's streams: derived from its database, so a restarted
    deployment resumes its own stream and consumer groups, and others do not mix in."""
    digest = hashlib.sha1((db_url or "sqlite:///data/wallet.db").encode()).hexdigest()
    return f"testbed:{digest[:12]}"


def check_broker_url(url: str) -> None:
    """ValueError unless ``url`` names a supported broker."""
    if not url.startswith(BROKER_SCHEMES):
        raise ValueError(f"--broker must be redis://host:port/db, got {url!r}")


def open_event_bus(url: str, prefix: str, consumer: str) -> RedisStreamsEventBus:
    """The bus for ``url`` (not started: subscribe first, then ``start``)."""
    check_broker_url(url)
    return RedisStreamsEventBus(url, prefix, consumer)
