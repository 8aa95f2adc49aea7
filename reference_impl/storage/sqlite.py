"""SQLite adapter: WAL, synchronous=NORMAL, one connection used from the event loop thread.

SQLite has one writer; every call here is synchronous and short, so a coroutine never
yields inside a transaction and the event loop itself serialises them. Several processes
(uvicorn workers) on one file serialise on SQLite's own lock (BEGIN IMMEDIATE, busy timeout).

Money commands are group-committed: the commands that arrive while the loop is busy run in
one write transaction and every caller is answered after the COMMIT. Common bets and wins
take the all-or-nothing short paths of :mod:`reference_impl.storage.sqlite_fast`; any other
command runs the general script in a savepoint, so its refusal undoes only its own writes;
an unexpected error rolls the whole batch back and its commands run one transaction each.
Checkpoints run in a background thread (:mod:`reference_impl.storage.sqlite_checkpointer`);
every write transaction holds its gate (:meth:`SqliteStorage._writing`), so a checkpoint that
blocks writers is waited for off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from reference_impl.domain import HotAccounts, OpResult
from reference_impl.domain.commands import Bet, Command, Win
from reference_impl.domain.errors import WalletError
from reference_impl.metrics import Registry
from reference_impl.storage.base import Gate, StorageSettings
from reference_impl.storage.counting import GROUP_COMMIT, OPERATION, CountedSqlite
from reference_impl.storage.schema import ADDED_COLUMNS, AFTER_ADDED_COLUMNS, SQLITE_SCHEMA
from reference_impl.storage.script import run_command
from reference_impl.storage.sql_storage import LedgerSnapshot, SqlStorage, load_ledger
from reference_impl.storage.sqlite_checkpointer import WalCheckpointer
from reference_impl.storage.sqlite_fast import fast_bet, fast_win

MAX_BATCH = 256
"""Most commands in one group commit."""

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA cache_size=-65536",  # 64 MiB of page cache
    "PRAGMA temp_store=MEMORY",
    "PRAGMA wal_autocheckpoint=0",  # checkpoints run in WalCheckpointer's thread
)

_PARAM = re.compile(r"\$(\d+)")
T = TypeVar("T")


@functools.lru_cache(maxsize=256)
def _to_sqlite(sql: str) -> str:
    """``$1`` parameters to SQLite's numbered ``?1``."""
    return _PARAM.sub(r"?\1", sql)


class _SqliteConn:
    """The script's Conn over the counted sqlite3 connection."""

    def __init__(self, conn: CountedSqlite) -> None:
        self._conn = conn

    async def fetchrow(self, sql: str, *args: Any) -> Mapping[str, Any] | None:
        row: sqlite3.Row | None = self._conn.execute(_to_sqlite(sql), args).fetchone()
        return row

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        return self._conn.execute(_to_sqlite(sql), args).fetchall()

    async def execute(self, sql: str, *args: Any) -> int:
        return self._conn.execute(_to_sqlite(sql), args).rowcount

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            self._conn.execute(_to_sqlite(sql), row)


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
        self._sql: CountedSqlite | None = None  # self._db with every statement counted
        self._lock = asyncio.Lock()
        self._pending: list[_Pending] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._checkpointer: WalCheckpointer | None = None
        self._gate = threading.Lock()  # held by a write transaction or a RESTART checkpoint
        self.group_commits = 0  # write transactions committed by the group commit

    async def open(self) -> None:
        """Open (creating folder and schema) with WAL and synchronous=NORMAL."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        for pragma in PRAGMAS:
            db.execute(pragma)
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, columns in ADDED_COLUMNS.items():
                present = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                for column, decl in columns.items():
                    if column not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            db.execute(AFTER_ADDED_COLUMNS)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._db = db
        self._sql = CountedSqlite(db, self.metrics)
        self._checkpointer = WalCheckpointer(self.path, self._gate)
        self._checkpointer.start()

    @property
    def checkpointer(self) -> WalCheckpointer | None:
        """The background checkpointer while open."""
        return self._checkpointer

    async def close(self) -> None:
        """Answer queued commands, stop checkpointing, close (SQLite checkpoints the WAL)."""
        while self._flush_task is not None:
            await asyncio.shield(self._flush_task)
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._db is not None:
            self._db.close()
            self._db = self._sql = None

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_SqliteConn]:
        """BEGIN IMMEDIATE for writes (pessimistic), deferred BEGIN otherwise."""
        db = self._sql
        if db is None:
            raise RuntimeError("storage is not open")
        started = time.perf_counter()
        async with self._writing(write), self._lock:
            immediate = write and self.settings.concurrency == "pessimistic"
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            self.metrics.lock_wait_seconds.observe(time.perf_counter() - started, "sqlite")
            try:
                yield _SqliteConn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @asynccontextmanager
    async def _writing(self, write: bool = True) -> AsyncIterator[None]:
        """Hold the checkpointer's gate for one write transaction (nothing for a read). A
        RESTART checkpoint in progress is waited for in a worker thread, so the event loop
        goes on answering meanwhile instead of sleeping in SQLite's busy handler."""
        gate = self._gate
        if not write:
            yield
            return
        if not gate.acquire(blocking=False):
            waiter = asyncio.ensure_future(asyncio.to_thread(gate.acquire))
            try:
                await asyncio.shield(waiter)
            except asyncio.CancelledError:  # the gate is ours once the thread gets it
                waiter.add_done_callback(lambda _: gate.release())
                raise
        try:
            yield
        finally:
            gate.release()

    async def read_ledger(self, *, incremental: bool) -> LedgerSnapshot:
        """Read in a worker thread on its own connection: WAL gives it a snapshot, and
        neither the event loop nor the writer waits for it."""
        if self._db is None:
            raise RuntimeError("storage is not open")
        return await asyncio.to_thread(self._read_ledger_sync, incremental)

    def _read_ledger_sync(self, incremental: bool) -> LedgerSnapshot:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("BEGIN")
            try:
                conn = _SqliteConn(CountedSqlite(db, self.metrics))
                return _run_sync(load_ledger(conn, incremental=incremental))
            finally:
                db.execute("COMMIT")
        finally:
            db.close()

    def retry_reason(self, exc: BaseException) -> str | None:
        """Duplicates (unique index) and a busy database are retried."""
        if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
            return "duplicate"
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return "busy"
        return None

    async def execute(self, cmd: Command, now_us: int, gate: Gate | None = None) -> OpResult:
        """Queue ``cmd`` for the next group commit and wait for its answer."""
        if self._db is None:
            raise RuntimeError("storage is not open")
        future: asyncio.Future[OpResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(cmd, now_us, gate, future, time.perf_counter()))
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_loop())
        return await future

    async def _flush_loop(self) -> None:
        """Commit batches until the queue is empty."""
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                async with self._writing(), self._lock:
                    done = self._commit_batch(batch)
                if not done:  # the batch as a whole failed: one transaction per command
                    for item in batch:
                        await self._execute_alone(item)
        finally:
            self._flush_task = None

    def _commit_batch(self, batch: list[_Pending]) -> bool:
        """Run ``batch`` in one transaction and answer it; False (nothing kept) on failure."""
        db = self._sql
        assert db is not None
        hot, fast = self.settings.hot, self.settings.concurrency == "pessimistic"
        outcomes: list[tuple[OpResult | None, WalletError | None, str]] = []
        token = OPERATION.set(batch[0].cmd.kind if len(batch) == 1 else GROUP_COMMIT)
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                return False
            try:
                for item in batch:
                    outcomes.append(_apply_one(db, item, hot, fast))
                db.execute("COMMIT")
                self.group_commits += 1
            except Exception:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                return False
        finally:
            OPERATION.reset(token)
        finished = time.perf_counter()
        for item, (result, err, path) in zip(batch, outcomes, strict=True):
            if item.future.done():  # the caller was cancelled; its effects are committed
                continue
            if err is not None:
                item.future.set_exception(err)
            else:
                assert result is not None
                item.future.set_result(result)
                self.metrics.tx_seconds.observe(finished - item.queued, item.cmd.kind, path)
        return True

    async def _execute_alone(self, item: _Pending) -> None:
        """The general path with its retries, answering the queued caller."""
        token = OPERATION.set(item.cmd.kind)
        try:
            result = await self.execute_general(item.cmd, item.now_us, item.gate)
        except BaseException as exc:  # handed to the caller, then re-raised if fatal
            if not item.future.done():
                item.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            OPERATION.reset(token)
        if not item.future.done():
            item.future.set_result(result)


def _apply_one(
    db: CountedSqlite, item: _Pending, hot: HotAccounts, fast: bool,
) -> tuple[OpResult | None, WalletError | None, str]:
    """One command of a group commit: a short path (all or nothing), else the general script
    in a savepoint, so that a refusal undoes only its own writes. Other errors propagate and
    fail the whole batch."""
    token = OPERATION.set(item.cmd.kind)
    try:
        return _apply_counted(db, item, hot, fast)
    finally:
        OPERATION.reset(token)


def _apply_counted(
    db: CountedSqlite, item: _Pending, hot: HotAccounts, fast: bool,
) -> tuple[OpResult | None, WalletError | None, str]:
    cmd, result = item.cmd, None
    if fast and isinstance(cmd, Bet):
        result = fast_bet(db, cmd, item.now_us, hot, item.gate)
    elif fast and isinstance(cmd, Win):
        result = fast_win(db, cmd, item.now_us, hot)
    if result is not None:
        return result, None, "fast"
    db.execute("SAVEPOINT cmd")
    try:
        result = _run_sync(run_command(
            _SqliteConn(db), cmd, item.now_us, item.gate, hot,
            lock_player=False, optimistic=not fast,
        ))
    except WalletError as err:
        db.execute("ROLLBACK TO cmd")
        db.execute("RELEASE cmd")
        return None, err, "error"
    db.execute("RELEASE cmd")
    return result, None, "general"


class _Pending:
    """A queued money command and the future its caller awaits."""

    __slots__ = ("cmd", "future", "gate", "now_us", "queued")

    def __init__(
        self, cmd: Command, now_us: int, gate: Gate | None, future: asyncio.Future[OpResult],
        queued: float,
    ) -> None:
        self.cmd, self.now_us, self.gate, self.future, self.queued = (
            cmd, now_us, gate, future, queued
        )


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends (the script over a sqlite3 connection)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise RuntimeError("the transaction script suspended inside a group commit")
