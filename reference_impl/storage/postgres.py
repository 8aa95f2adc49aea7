"""PostgreSQL adapter over asyncpg: READ COMMITTED, a bet or a win in one round trip.

The common bet (no limits, enough funds, new id) is one call of the ``wallet_bet`` function:
a conditional ``UPDATE ... WHERE balance >= amount`` extending the hash chain, the
idempotency insert, the house credit and the journal insert. The common win (a round with an
open bet, new id) is one call of ``wallet_win``. Everything else takes the general
transaction script, with row locks (pessimistic) or a version check and retry (optimistic).

Connections come from :class:`~reference_impl.storage.pg_pool.LeanPool` (asyncpg's pool
costs more CPU per acquire than the bet's round trip); they are not reset on release: the
adapter sets no session state, and a connection given back inside a transaction is dropped.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from reference_impl.domain import OpResult
from reference_impl.domain.commands import Bet, Command, Win
from reference_impl.metrics import Registry
from reference_impl.storage.base import Gate, StorageSettings
from reference_impl.storage.counting import OPERATION, count_pg
from reference_impl.storage.pg_pool import LeanPool
from reference_impl.storage.schema import POSTGRES_FUNCTIONS, POSTGRES_SCHEMA
from reference_impl.storage.sql_storage import SqlStorage

SCHEMA_LOCK_KEY = 0x7761_6C6C  # advisory lock serialising schema creation between workers


class _PgConn:
    """The script's Conn over an asyncpg connection; every statement counted."""

    def __init__(self, conn: asyncpg.Connection, metrics: Registry) -> None:
        self._conn, self._metrics = conn, metrics

    async def fetchrow(self, sql: str, *args: Any) -> Mapping[str, Any] | None:
        count_pg(self._metrics)
        row: Mapping[str, Any] | None = await self._conn.fetchrow(sql, *args)
        return row

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        count_pg(self._metrics)
        return list(await self._conn.fetch(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        count_pg(self._metrics)
        status: str = await self._conn.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:  # one pipelined exchange for all rows
            count_pg(self._metrics)
            await self._conn.executemany(sql, rows)


class PostgresStorage(SqlStorage):
    """PostgreSQL through a URL; the schema is created on first start."""

    name = "postgres"
    lock_player_rows = True
    freeze_writers_sql = "LOCK TABLE players, accounts, journal, txs IN SHARE ROW EXCLUSIVE MODE"

    def __init__(
        self, dsn: str, settings: StorageSettings | None = None, metrics: Registry | None = None,
    ) -> None:
        super().__init__(settings or StorageSettings(), metrics)
        self.dsn = dsn
        self._pool: LeanPool | None = None

    async def open(self) -> None:
        """Create the pool, then the schema and the bet function (once, under a lock)."""
        self._pool = LeanPool(
            self.dsn, self.settings.pool_size, statement_cache_size=512, command_timeout=60,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            await conn.execute(POSTGRES_SCHEMA)
            await conn.execute(POSTGRES_FUNCTIONS)

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("storage is not open")
        started = time.perf_counter()
        async with pool.acquire() as conn:
            self.metrics.pool_wait_seconds.observe(time.perf_counter() - started, "postgres")
            yield conn

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_PgConn]:
        """READ COMMITTED for writes; reads see one snapshot (REPEATABLE READ), so an audit
        under load compares the journal and the balances at the same instant."""
        isolation = "read_committed" if write else "repeatable_read"
        count_pg(self.metrics, 2)  # BEGIN and COMMIT (or ROLLBACK)
        async with self._acquire() as conn, conn.transaction(
            isolation=isolation, readonly=not write
        ):
            yield _PgConn(conn, self.metrics)

    def retry_reason(self, exc: BaseException) -> str | None:
        """Duplicates, deadlocks and serialization failures are retried."""
        if isinstance(exc, asyncpg.UniqueViolationError):
            return "duplicate"
        if isinstance(exc, asyncpg.DeadlockDetectedError):
            return "deadlock"
        if isinstance(exc, asyncpg.SerializationError):
            return "serialization"
        return None

    async def execute(self, cmd: Command, now_us: int, gate: Gate | None = None) -> OpResult:
        """Bets of players without limits, and wins, take the one-round-trip functions."""
        token = OPERATION.set(cmd.kind)
        try:
            if self.settings.concurrency == "pessimistic":
                result = None
                if isinstance(cmd, Bet) and (gate is None or gate.skip("bet", None)):
                    result = await self._fast_call("wallet_bet", cmd, now_us)
                elif isinstance(cmd, Win):
                    result = await self._fast_call("wallet_win", cmd, now_us)
                if result is not None:
                    return result
            return await self.execute_general(cmd, now_us, gate)
        finally:
            OPERATION.reset(token)

    async def _fast_call(self, function: str, cmd: Bet | Win, now_us: int) -> OpResult | None:
        """One call of a plpgsql fast path; None when the general path must decide."""
        started = time.perf_counter()
        hot = self.settings.hot
        args: tuple[object, ...] = (
            cmd.transaction_id, cmd.player_id, cmd.round_id, cmd.amount, cmd.fingerprint(),
            hot.house_shard(cmd.player_id), now_us, cmd.currency,
        )
        if isinstance(cmd, Bet):
            args += (cmd.jackpot_bp, hot.jackpot_shard(cmd.player_id), cmd.device)
        try:
            async with self._acquire() as conn:
                count_pg(self.metrics)
                row = await conn.fetchrow(_FAST_SQL[function], *args)
        except asyncpg.UniqueViolationError:
            self.metrics.retries.inc("duplicate")
            return None
        if row is None or row["outcome"] != "OK":
            return None
        self.metrics.tx_seconds.observe(time.perf_counter() - started, cmd.kind, "fast")
        return OpResult(cmd.transaction_id, "ok", row["new_balance"], row["cur"])


_FAST_SQL = {
    "wallet_bet": "SELECT * FROM wallet_bet($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    "wallet_win": "SELECT * FROM wallet_win($1, $2, $3, $4, $5, $6, $7, $8)",
}

