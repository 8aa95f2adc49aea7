"""Pick the adapter from a ``--db`` URL."""

from __future__ import annotations

from pathlib import Path

from reference_impl.metrics import Registry
from reference_impl.storage.base import Storage, StorageSettings

DEFAULT_SQLITE_PATH = Path("data") / "wallet.db"


def storage_for_url(
    url: str | None, settings: StorageSettings | None = None, metrics: Registry | None = None,
) -> Storage:
    """``sqlite:///path`` (or None: ./data/wallet.db) or ``postgresql://...``; not yet open."""
    settings = settings or StorageSettings()
    if url is None or url == "":
        from reference_impl.storage.sqlite import SqliteStorage

        return SqliteStorage(DEFAULT_SQLITE_PATH, settings, metrics)
    if url.startswith("sqlite:///"):
        from reference_impl.storage.sqlite import SqliteStorage

        return SqliteStorage(url.removeprefix("sqlite:///"), settings, metrics)
    if url.startswith(("postgresql://", "postgres://")):
        from reference_impl.storage.postgres import PostgresStorage

        return PostgresStorage(url, settings, metrics)
    raise ValueError(f"--db must be sqlite:///path or postgresql://..., got {url!r}")


async def open_storage(
    url: str | None, settings: StorageSettings | None = None, metrics: Registry | None = None,
) -> Storage:
    """Create and open the adapter for ``url``."""
    storage = storage_for_url(url, settings, metrics)
    await storage.open()
    return storage
