"""Storage over SQL, shared by the SQLite and PostgreSQL adapters."""

from __future__ import annotations

import abc
import asyncio
import random
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from reference_impl.domain import AuditReport, JournalEntry, OpResult, verify_ledger
from reference_impl.domain.accounts import player_account
from reference_impl.domain.commands import Command
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.journal import GENESIS_HASH
from reference_impl.domain.money import validate_currency, validate_id
from reference_impl.domain.rebuild import RebuildPlan, plan_rebuild
from reference_impl.storage.base import CommittedTx, Gate, LimitsUpdate, PlayerInfo, Storage
from reference_impl.storage.script import (
    PLAYER_COLUMNS,
    Conn,
    VersionConflict,
    entry_from_row,
    run_command,
)


class SqlStorage(Storage):
    """The storage operations written once over :class:`Conn`."""

    @abc.abstractmethod
    def transaction(self, *, write: bool) -> AbstractAsyncContextManager[Conn]:
        """A connection inside a transaction (committed on exit, rolled back on error)."""

    @abc.abstractmethod
    def retry_reason(self, exc: BaseException) -> str | None:
        """Why ``exc`` is worth a retry (duplicate, busy, deadlock...), None when it is not."""

    lock_player_rows: bool = False
    freeze_writers_sql: str | None = None
    """Run first in a maintenance transaction to keep writers out (SQLite: BEGIN IMMEDIATE
    already does)."""

    async def create_player(self, player_id: str, currency: str, now_us: int) -> PlayerInfo:
        """Open a wallet with balance 0 and make sure the system accounts exist."""
        validate_id(player_id, "player_id")
        validate_currency(currency)
        for attempt in range(self.settings.max_retries):
            try:
                async with self.transaction(write=True) as conn:
                    for account in self.settings.hot.system_accounts(currency):
                        kind = account.split(":", 1)[0]
                        await conn.execute(
                            "INSERT INTO accounts (account_id, kind, currency, balance, version) "
                            "VALUES ($1, $2, $3, 0, 0) ON CONFLICT (account_id) DO NOTHING",
                            account, kind, currency,
                        )
                    inserted = await conn.execute(
                        "INSERT INTO players (player_id, currency, balance, seq, last_hash, "
                        "version, limits, identity_verified, created_us) "
                        "VALUES ($1, $2, 0, 0, $3, 0, NULL, FALSE, $4) "
                        "ON CONFLICT (player_id) DO NOTHING",
                        player_id, currency, GENESIS_HASH, now_us,
                    )
                if inserted != 1:
                    raise WalletError(ErrorCode.PLAYER_EXISTS, f"player {player_id} exists")
                return PlayerInfo(player_id, currency, 0, None)
            except WalletError:
                raise
            except Exception as exc:
                if self.retry_reason(exc) is None or attempt == self.settings.max_retries - 1:
                    raise
                await _backoff(attempt)
        raise AssertionError("unreachable")

    async def get_player(self, player_id: str) -> PlayerInfo:
        """The player's balance, currency and limits."""
        async with self.transaction(write=False) as conn:
            row = await conn.fetchrow(
                f"SELECT {PLAYER_COLUMNS} FROM players WHERE player_id = $1", player_id
            )
        if row is None:
            raise WalletError(ErrorCode.UNKNOWN_PLAYER, f"player {player_id} does not exist")
        return PlayerInfo(
            row["player_id"], row["currency"], row["balance"], row["limits"],
            bool(row["identity_verified"]),
        )

    async def execute(self, cmd: Command, now_us: int, gate: Gate | None = None) -> OpResult:
        """The general path: retried on version conflicts, duplicates, busy or deadlock."""
        return await self.execute_general(cmd, now_us, gate)

    async def execute_general(
        self, cmd: Command, now_us: int, gate: Gate | None
    ) -> OpResult:
        """Run the transaction script with retries."""
        optimistic = self.settings.concurrency == "optimistic"
        started = time.perf_counter()
        for attempt in range(self.settings.max_retries):
            try:
                async with self.transaction(write=True) as conn:
                    result = await run_command(
                        conn, cmd, now_us, gate, self.settings.hot,
                        lock_player=self.lock_player_rows and not optimistic,
                        optimistic=optimistic,
                    )
                self.metrics.tx_seconds.observe(
                    time.perf_counter() - started, cmd.kind, "general"
                )
                return result
            except WalletError:
                raise
            except VersionConflict:
                self.metrics.retries.inc("version_conflict")
            except Exception as exc:
                reason = self.retry_reason(exc)
                if reason is None:
                    raise
                self.metrics.retries.inc(reason)
            if attempt == self.settings.max_retries - 1:
                break
            await _backoff(attempt)
        raise RuntimeError(f"transaction {cmd.transaction_id} gave up after retries")

    async def update_limits(self, player_id: str, update: LimitsUpdate) -> str | None:
        """Read-modify-write of the limits JSON under the player's lock."""
        for attempt in range(self.settings.max_retries):
            try:
                async with self.transaction(write=True) as conn:
                    lock = " FOR UPDATE" if self.lock_player_rows else ""
                    row = await conn.fetchrow(
                        f"SELECT limits, version FROM players WHERE player_id = $1{lock}",
                        player_id,
                    )
                    if row is None:
                        raise WalletError(
                            ErrorCode.UNKNOWN_PLAYER, f"player {player_id} does not exist"
                        )
                    new = update(row["limits"])
                    changed = await conn.execute(
                        "UPDATE players SET limits = $2, version = version + 1 "
                        "WHERE player_id = $1 AND version = $3",
                        player_id, new, row["version"],
                    )
                    if changed != 1:
                        raise VersionConflict(player_id)
                return new
            except VersionConflict:
                self.metrics.retries.inc("version_conflict")
            except WalletError:
                raise
            except Exception as exc:
                if self.retry_reason(exc) is None:
                    raise
            await _backoff(attempt)
        raise RuntimeError(f"limits of {player_id} could not be updated")

    async def set_identity_verified(self, player_id: str, verified: bool) -> None:
        """Record a KYC outcome."""
        async with self.transaction(write=True) as conn:
            changed = await conn.execute(
                "UPDATE players SET identity_verified = $2 WHERE player_id = $1",
                player_id, verified,
            )
        if changed != 1:
            raise WalletError(ErrorCode.UNKNOWN_PLAYER, f"player {player_id} does not exist")

    async def transactions(
        self, player_id: str, limit: int, before_seq: int | None = None
    ) -> list[JournalEntry]:
        """Newest first, ``limit`` entries with seq below ``before_seq``."""
        async with self.transaction(write=False) as conn:
            exists = await conn.fetchrow(
                "SELECT player_id FROM players WHERE player_id = $1", player_id
            )
            if exists is None:
                raise WalletError(ErrorCode.UNKNOWN_PLAYER, f"player {player_id} does not exist")
            rows = await conn.fetch(
                "SELECT * FROM journal WHERE stream = $1 AND seq < $2 "
                "ORDER BY seq DESC LIMIT $3",
                player_id, before_seq if before_seq is not None else 2**62, limit,
            )
        return [entry_from_row(r) for r in rows]

    async def audit(self) -> AuditReport:
        """Load the whole ledger in one read transaction and verify it."""
        async with self.transaction(write=False) as conn:
            journal = await conn.fetch("SELECT * FROM journal")
            players = await conn.fetch(
                "SELECT player_id, currency, balance, seq, last_hash FROM players"
            )
            accounts = await conn.fetch("SELECT account_id, balance FROM accounts")
        balances = {r["account_id"]: r["balance"] for r in accounts}
        heads: dict[str, tuple[int, str]] = {}
        for r in players:
            balances[player_account(r["player_id"], r["currency"])] = r["balance"]
            heads[r["player_id"]] = (r["seq"], r["last_hash"])
        report = verify_ledger([entry_from_row(r) for r in journal], balances, heads)
        report.counts["players"] = len(players)
        return report

    async def rebuild_balances(self, *, apply: bool) -> RebuildPlan:
        """Project the journal, compare with the stored balances and heads, fix them."""
        async with self.transaction(write=True) as conn:
            if self.freeze_writers_sql:
                await conn.execute(self.freeze_writers_sql)
            journal = await conn.fetch("SELECT * FROM journal ORDER BY stream, seq")
            players = await conn.fetch(
                "SELECT player_id, currency, balance, seq, last_hash FROM players"
            )
            accounts = await conn.fetch("SELECT account_id, balance FROM accounts")
            stored = {r["account_id"]: r["balance"] for r in accounts}
            heads: dict[str, tuple[int, str]] = {}
            currency: dict[str, str] = {}
            for r in players:
                stored[player_account(r["player_id"], r["currency"])] = r["balance"]
                heads[r["player_id"]] = (r["seq"], r["last_hash"])
                currency[r["player_id"]] = r["currency"]
            plan = plan_rebuild((entry_from_row(r) for r in journal), stored, heads)
            if not (apply and plan.ok and plan.corrections):
                return plan
            for player, (seq, head_hash) in plan.heads.items():
                balance = plan.balances[player_account(player, currency[player])]
                await conn.execute(
                    "UPDATE players SET balance = $2, seq = $3, last_hash = $4, "
                    "version = version + 1 WHERE player_id = $1 AND (balance <> $2 OR "
                    "seq <> $3 OR last_hash <> $4)",
                    player, balance, seq, head_hash,
                )
            for account, balance in plan.balances.items():
                if account.startswith("player:"):
                    continue
                kind, cur = account.split(":", 2)[:2]
                await conn.execute(
                    "INSERT INTO accounts (account_id, kind, currency, balance, version) "
                    "VALUES ($1, $2, $3, $4, 1) ON CONFLICT (account_id) DO UPDATE SET "
                    "balance = EXCLUDED.balance, version = accounts.version + 1 "
                    "WHERE accounts.balance <> EXCLUDED.balance",
                    account, kind, cur, balance,
                )
        return plan

    async def save_relay_mark(self, publisher: str, ts_us: int) -> None:
        """Upsert the publisher's mark."""
        async with self.transaction(write=True) as conn:
            await conn.execute(
                "INSERT INTO relay_marks (publisher, ts_us) VALUES ($1, $2) "
                "ON CONFLICT (publisher) DO UPDATE SET ts_us = EXCLUDED.ts_us",
                publisher, ts_us,
            )

    async def relay_marks(self) -> dict[str, int]:
        """Every publisher's mark."""
        async with self.transaction(write=False) as conn:
            rows = await conn.fetch("SELECT publisher, ts_us FROM relay_marks")
        return {r["publisher"]: r["ts_us"] for r in rows}

    async def delete_relay_marks(self, publishers: list[str]) -> None:
        """Delete the marks of ``publishers``."""
        async with self.transaction(write=True) as conn:
            for publisher in publishers:
                await conn.execute("DELETE FROM relay_marks WHERE publisher = $1", publisher)

    async def committed_since(
        self, ts_us: int, after: tuple[int, str] | None = None, limit: int = 1000,
    ) -> list[CommittedTx]:
        """A page of money operations from ``ts_us`` on, in (ts, id) order."""
        after_ts, after_id = after if after is not None else (ts_us - 1, "")
        async with self.transaction(write=False) as conn:
            rows = await conn.fetch(
                "SELECT transaction_id, kind, player_id, amount, ts_us, instrument, device, "
                "round_id "
                "FROM txs WHERE ts_us >= $1 AND kind <> 'tombstone' AND status IS NOT NULL "
                "AND (ts_us > $2 OR (ts_us = $2 AND transaction_id > $3)) "
                "ORDER BY ts_us, transaction_id LIMIT $4",
                ts_us, after_ts, after_id, limit,
            )
        return [CommittedTx(r["transaction_id"], r["kind"], r["player_id"], r["amount"],
                            r["ts_us"], r["instrument"], r["device"], r["round_id"])
                for r in rows]

    async def add_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Insert alerts in one transaction."""
        if not alerts:
            return
        async with self.transaction(write=True) as conn:
            for a in alerts:
                await conn.execute(
                    "INSERT INTO alerts (player_id, rule_id, reason_code, severity, outcome, ts, "
                    "evidence, rules_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    a["player_id"], a["rule_id"], a["reason_code"], a["severity"],
                    str(a["outcome"]), float(a["ts"]),
                    orjson.dumps(a["evidence"], default=str).decode(), a["rules_version"],
                )

    async def list_alerts(
        self, player_id: str | None, limit: int, after_id: int = 0
    ) -> list[dict[str, Any]]:
        """Alerts oldest first, optionally of one player."""
        async with self.transaction(write=False) as conn:
            if player_id is None:
                rows = await conn.fetch(
                    "SELECT * FROM alerts WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit
                )
            else:
                rows = await conn.fetch(
                    "SELECT * FROM alerts WHERE player_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    player_id, after_id, limit,
                )
        return [
            {**{k: r[k] for k in ("id", "player_id", "rule_id", "reason_code", "severity",
                                  "outcome", "ts", "rules_version")},
             "evidence": orjson.loads(r["evidence"])}
            for r in rows
        ]


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.05, 0.0005 * (2 ** min(attempt, 7))) * random.random())
