"""Deterministic cost counts of the storage layer: SQL statements and database round trips.

Every statement an adapter sends goes through one of the two counted doors here (the SQLite
connection wrapper, or :func:`count_pg` called by the PostgreSQL adapter for each exchange),
labelled with the money operation being executed (``OPERATION``, set by the adapters'
``execute``; ``other`` for player, limits, audit and relay work; ``group_commit`` for the
BEGIN/COMMIT of a SQLite group commit of several commands). Unlike times, these counts do not
move with the machine's load, so a regression cannot hide in noise: the benchmark
``benchmarks/bench_counts.py`` compares them with a stored baseline in CI.

Definitions: a *statement* is one SQL command the adapter issues (BEGIN, COMMIT and SAVEPOINT
included; a plpgsql function call is one statement: its body runs inside the server). A
*round trip* is one client/server exchange (PostgreSQL only: SQLite runs in-process, so its
round trips are not counted).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from reference_impl.metrics import Registry

OPERATION: ContextVar[str] = ContextVar("storage_operation", default="other")
"""The money operation (command kind) the current statements belong to."""

GROUP_COMMIT = "group_commit"
"""Label of a SQLite group commit's BEGIN/COMMIT when the batch holds several commands."""


class CountedSqlite:
    """A sqlite3 connection as the adapter uses it: each ``execute`` counted, then run."""

    __slots__ = ("_db", "_metrics")

    def __init__(self, db: sqlite3.Connection, metrics: Registry) -> None:
        self._db, self._metrics = db, metrics

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Count one statement and run it."""
        self._metrics.db_statements.inc("sqlite", OPERATION.get())
        return self._db.execute(sql, args)

    @property
    def in_transaction(self) -> bool:
        """True inside BEGIN ... COMMIT."""
        return self._db.in_transaction


def count_pg(metrics: Registry, statements: int = 1) -> None:
    """Count ``statements`` PostgreSQL statements, each its own round trip."""
    op = OPERATION.get()
    metrics.db_statements.inc("postgres", op, amount=statements)
    metrics.db_round_trips.inc("postgres", op, amount=statements)
