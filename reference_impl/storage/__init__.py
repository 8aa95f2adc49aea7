"""Storage adapters: SQLite (embedded default) and PostgreSQL, behind one async interface."""

from reference_impl.storage.base import (
    CommittedTx,
    Gate,
    PlayerInfo,
    Storage,
    StorageSettings,
)
from reference_impl.storage.factory import DEFAULT_SQLITE_PATH, open_storage, storage_for_url

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "CommittedTx",
    "Gate",
    "PlayerInfo",
    "Storage",
    "StorageSettings",
    "open_storage",
    "storage_for_url",
]
