"""SQLite adapter: WAL, synchronous=NORMAL, one connection used from the event loop thread.

SQLite has one writer; every call here is synchronous and short, so a coroutine never
yields inside a transaction and the event loop itself serialises them. Several processes
(uvicorn workers) on one file serialise on SQLite's own lock (BEGIN IMMEDIATE, busy timeout).
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from reference_impl.metrics import Registry
from reference_impl.storage.base import StorageSettings
from reference_impl.storage.schema import SQLITE_SCHEMA
from reference_impl.storage.sql_storage import SqlStorage

_PARAM = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=256)
def _to_sqlite(sql: str) -> str:
    """``$1`` parameters to SQLite's numbered ``?1``."""
    return _PARAM.sub(r"?\1", sql)


class _SqliteConn:
    """The script's Conn over a sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetchrow(self, sql: str, *args: Any) -> Mapping[str, Any] | None:
        row: sqlite3.Row | None = self._conn.execute(_to_sqlite(sql), args).fetchone()
        return row

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        return self._conn.execute(_to_sqlite(sql), args).fetchall()

    async def execute(self, sql: str, *args: Any) -> int:
        return self._conn.execute(_to_sqlite(sql), args).rowcount


class SqliteStorage(SqlStorage):
    """The embedded default: a file, no set-up."""

    name = "sqlite"

    def __init__(
        self, path: str | Path, settings: StorageSettings | None = None,
        metrics: Registry | None = None,
    ) -> None:
        super().__init__(settings or StorageSettings(), metrics)
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Open (creating folder and schema) with WAL and synchronous=NORMAL."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._db = db

    async def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_SqliteConn]:
        """BEGIN IMMEDIATE for writes (pessimistic), deferred BEGIN otherwise."""
        db = self._db
        if db is None:
            raise RuntimeError("storage is not open")
        started = time.perf_counter()
        async with self._lock:
            immediate = write and self.settings.concurrency == "pessimistic"
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            self.metrics.lock_wait_seconds.observe(time.perf_counter() - started, "sqlite")
            try:
                yield _SqliteConn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def retry_reason(self, exc: BaseException) -> str | None:
        """Duplicates (unique index) and a busy database are retried."""
        if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
            return "duplicate"
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return "busy"
        return None
