"""Storage over SQL, shared by the SQLite and PostgreSQL adapters."""

from __future__ import annotations

import abc
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from reference_impl.domain import AuditReport, JournalEntry, OpResult
from reference_impl.domain.accounts import AccountRef, is_player_account, player_account
from reference_impl.domain.audit import AuditCheckpoint, AuditIncrement, verify_increment
from reference_impl.domain.commands import Command
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.journal import GENESIS_HASH
from reference_impl.domain.money import validate_currency, validate_id
from reference_impl.domain.rebuild import RebuildPlan, plan_rebuild
from reference_impl.metrics import Registry
from reference_impl.storage.base import (
    CommittedTx,
    Gate,
    LimitsUpdate,
    PlayerInfo,
    Storage,
    StorageSettings,
)
from reference_impl.storage.script import (
    PLAYER_COLUMNS,
    Conn,
    VersionConflict,
    entry_from_row,
    run_command,
)

T = TypeVar("T")


class SqlStorage(Storage):
    """The storage operations written once over :class:`Conn`."""

    def __init__(self, settings: StorageSettings, metrics: Registry | None = None) -> None:
        super().__init__(settings, metrics)
        self._audit_lock = asyncio.Lock()

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
        """Open a wallet with balance 0 and make sure the system accounts exist; the same
        request again answers the same (idempotent), another currency is PLAYER_EXISTS."""
        validate_id(player_id, "player_id")
        validate_currency(currency)

        async def attempt() -> PlayerInfo:
            async with self.transaction(write=True) as conn:
                for account in self.settings.hot.system_accounts(currency):
                    await conn.execute(
                        "INSERT INTO accounts (account_id, kind, currency, balance, version) "
                        "VALUES ($1, $2, $3, 0, 0) ON CONFLICT (account_id) DO NOTHING",
                        account, AccountRef.parse(account).kind.value, currency,
                    )
                inserted = await conn.execute(
                    "INSERT INTO players (player_id, currency, balance, seq, last_hash, "
                    "version, limits, identity_verified, created_us) "
                    "VALUES ($1, $2, 0, 0, $3, 0, NULL, FALSE, $4) "
                    "ON CONFLICT (player_id) DO NOTHING",
                    player_id, currency, GENESIS_HASH, now_us,
                )
                if inserted != 1:
                    row = await conn.fetchrow(
                        "SELECT currency FROM players WHERE player_id = $1", player_id)
                    if row is None or row["currency"] != currency:
                        raise WalletError(ErrorCode.PLAYER_EXISTS,
                                          f"player {player_id} exists in another currency")
            # A retry of the same request (same id and currency) gets the first answer:
            # the wallet as it was opened.
            return PlayerInfo(player_id, currency, 0, None)

        return await self.retrying(attempt, f"creating player {player_id}")

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

        async def attempt() -> OpResult:
            async with self.transaction(write=True) as conn:
                return await run_command(
                    conn, cmd, now_us, gate, self.settings.hot,
                    lock_player=self.lock_player_rows and not optimistic,
                    optimistic=optimistic,
                )

        result = await self.retrying(attempt, f"transaction {cmd.transaction_id}")
        self.metrics.tx_seconds.observe(time.perf_counter() - started, cmd.kind, "general")
        return result

    async def retrying(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``attempt`` (one whole transaction) until it commits: version conflicts and
        the errors :meth:`retry_reason` names are retried after a jittered backoff, at most
        ``settings.max_retries`` times; a WalletError (a refusal) is final.

        The one retry loop of the SQL storage. Not tenacity: its AsyncRetrying costs about
        43 us of CPU per call here against under 1 us for this loop, on a path that runs for
        every money operation (measured in ARCHITECTURE.md, Decisions).
        """
        tries = self.settings.max_retries
        for n in range(tries):
            try:
                return await attempt()
            except WalletError:
                raise
            except VersionConflict:
                self.metrics.retries.inc("version_conflict")
            except Exception as exc:
                reason = self.retry_reason(exc)
                if reason is None:
                    raise
                self.metrics.retries.inc(reason)
            if n < tries - 1:
                await _backoff(n)
        raise RuntimeError(f"{what} gave up after {tries} attempts")

    async def update_limits(self, player_id: str, update: LimitsUpdate) -> str | None:
        """Read-modify-write of the limits JSON under the player's lock."""

        async def attempt() -> str | None:
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

        return await self.retrying(attempt, f"limits of {player_id}")

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

    async def audit(self, *, full: bool = False) -> AuditReport:
        """Verify the journal entries added since the last clean audit's checkpoint, and the
        stored balances and heads against it (``full``: the whole journal from genesis).

        The reads share one snapshot (:meth:`read_ledger`), the hashing runs in a worker
        thread, so the event loop (every bet of this process) never waits on it; a clean
        audit then saves the checkpoint it reached, unless another auditor moved it first.
        Audits of one process run one at a time.
        """
        async with self._audit_lock:
            snap = await self.read_ledger(incremental=not full)
            start = AuditCheckpoint() if full else snap.checkpoint
            step = await asyncio.to_thread(
                verify_increment, start, snap.entries, snap.balances, snap.heads)
            step.report.counts["players"] = len(snap.heads)
            if step.report.ok and (step.changed_chains or step.changed_accounts or full):
                await self._save_checkpoint(snap.generation, step, replace_all=full)
            return step.report

    async def read_ledger(self, *, incremental: bool) -> LedgerSnapshot:
        """The ledger in one read snapshot (adapters may read it off the event loop)."""
        async with self.transaction(write=False) as conn:
            return await load_ledger(conn, incremental=incremental)

    async def _save_checkpoint(
        self, generation: int, step: AuditIncrement, *, replace_all: bool,
    ) -> None:
        """Store ``step``'s checkpoint if the stored one is still ``generation``."""

        async def attempt() -> None:
            async with self.transaction(write=True) as conn:
                moved = await conn.execute(
                    "UPDATE audit_state SET generation = generation + 1, entries = $2 "
                    "WHERE id = 1 AND generation = $1",
                    generation, step.checkpoint.entries,
                )
                if moved != 1:
                    return  # another auditor saved first; this report stays true
                chains = step.checkpoint.chains if replace_all else step.changed_chains
                accounts = step.checkpoint.projection if replace_all else step.changed_accounts
                await conn.executemany(
                    "INSERT INTO audit_chains (stream, seq, hash) VALUES ($1, $2, $3) "
                    "ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
                    [(k, v[0], v[1]) for k, v in chains.items()],
                )
                await conn.executemany(
                    "INSERT INTO audit_accounts (account_id, balance) VALUES ($1, $2) "
                    "ON CONFLICT (account_id) DO UPDATE SET balance = EXCLUDED.balance",
                    list(accounts.items()),
                )

        await self.retrying(attempt, "saving the audit checkpoint")

    async def rebuild_balances(self, *, apply: bool) -> RebuildPlan:
        """Project the journal, compare with the stored balances and heads, fix them."""
        async with self.transaction(write=True) as conn:
            if self.freeze_writers_sql:
                await conn.execute(self.freeze_writers_sql)
            snap = await load_ledger(conn, incremental=False)
            plan = plan_rebuild(snap.entries, snap.balances, snap.heads)
            if not (apply and plan.ok and plan.corrections):
                return plan
            for player, (seq, head_hash) in plan.heads.items():
                balance = plan.balances[player_account(player, snap.currencies[player])]
                await conn.execute(
                    "UPDATE players SET balance = $2, seq = $3, last_hash = $4, "
                    "version = version + 1 WHERE player_id = $1 AND (balance <> $2 OR "
                    "seq <> $3 OR last_hash <> $4)",
                    player, balance, seq, head_hash,
                )
            for account, balance in plan.balances.items():
                if is_player_account(account):
                    continue
                ref = AccountRef.parse(account)
                kind, cur = ref.kind.value, ref.currency
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
        """A page of money operations (and refused deposits) from ``ts_us`` on, in
        (ts, id) order."""
        after_ts, after_id = after if after is not None else (ts_us - 1, "")
        async with self.transaction(write=False) as conn:
            rows = await conn.fetch(
                "SELECT * FROM ("
                "SELECT transaction_id, kind, player_id, amount, ts_us, instrument, device, "
                "round_id "
                "FROM txs WHERE ts_us >= $1 AND kind <> 'tombstone' AND status IS NOT NULL "
                "AND (ts_us > $2 OR (ts_us = $2 AND transaction_id > $3)) "
                "UNION ALL "
                "SELECT transaction_id, 'deposit_declined', player_id, amount, ts_us, "
                "instrument, device, '' FROM declined_deposits WHERE ts_us >= $1 "
                "AND (ts_us > $2 OR (ts_us = $2 AND transaction_id > $3))"
                ") AS t ORDER BY ts_us, transaction_id, kind LIMIT $4",
                ts_us, after_ts, after_id, limit,
            )
        return [CommittedTx(r["transaction_id"], r["kind"], r["player_id"], r["amount"],
                            r["ts_us"], r["instrument"], r["device"], r["round_id"])
                for r in rows]

    async def record_declined(self, tx: CommittedTx) -> None:
        """Keep a refused deposit (once per transaction id) so its event can be recovered
        and replayed like a committed operation's."""
        async with self.transaction(write=True) as conn:
            await conn.execute(
                "INSERT INTO declined_deposits (transaction_id, player_id, amount, ts_us, "
                "instrument, device) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (transaction_id) DO NOTHING",
                tx.transaction_id, tx.player_id, tx.amount, tx.ts_us, tx.instrument, tx.device,
            )

    async def add_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Insert alerts in one transaction; an alert already stored for the same rule,
        player and transaction is skipped."""
        if not alerts:
            return
        async with self.transaction(write=True) as conn:
            for a in alerts:
                txid = a["evidence"].get("transaction_id")
                await conn.execute(
                    "INSERT INTO alerts (player_id, rule_id, reason_code, severity, outcome, ts, "
                    "evidence, rules_version, transaction_id) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                    "ON CONFLICT (rule_id, player_id, transaction_id) DO NOTHING",
                    a["player_id"], a["rule_id"], a["reason_code"], a["severity"],
                    str(a["outcome"]), float(a["ts"]),
                    orjson.dumps(a["evidence"], default=str).decode(), a["rules_version"],
                    None if txid is None else str(txid),
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


@dataclass
class LedgerSnapshot:
    """The ledger as one snapshot shows it: journal entries (all, or those after the audit
    checkpoint), every account's stored balance (players as ``player:CUR:id``), each player's
    stored chain head and currency, and the audit checkpoint with its generation."""

    entries: list[JournalEntry]
    balances: dict[str, int]
    heads: dict[str, tuple[int, str]]
    currencies: dict[str, str]
    checkpoint: AuditCheckpoint
    generation: int


_NEW_ENTRIES = (
    "SELECT j.* FROM players p LEFT JOIN audit_chains c ON c.stream = p.player_id "
    "CROSS JOIN journal j WHERE p.seq > COALESCE(c.seq, 0) "
    "AND j.stream = p.player_id AND j.seq > COALESCE(c.seq, 0)"
)
"""Entries after each player's verified head, found from the players whose stored head
moved past it: the cost follows the players and the new entries, not the journal's length
(entries beyond a player's stored head are left to the full check). CROSS JOIN keeps
SQLite's planner on that order (players, then a primary-key range of the journal), where it
would otherwise scan the journal; PostgreSQL plans it as the inner join it is."""


async def load_ledger(conn: Conn, *, incremental: bool) -> LedgerSnapshot:
    """The one ledger loader of the SQL storage (audit, full audit, rebuild)."""
    state = await conn.fetchrow("SELECT generation, entries FROM audit_state WHERE id = 1")
    generation = 0 if state is None else state["generation"]
    checkpoint = AuditCheckpoint()
    if incremental:
        chains = await conn.fetch("SELECT stream, seq, hash FROM audit_chains")
        projection = await conn.fetch("SELECT account_id, balance FROM audit_accounts")
        checkpoint = AuditCheckpoint(
            {r["stream"]: (r["seq"], r["hash"]) for r in chains},
            {r["account_id"]: r["balance"] for r in projection},
            0 if state is None else state["entries"],
        )
        journal = await conn.fetch(_NEW_ENTRIES)
    else:
        journal = await conn.fetch("SELECT * FROM journal ORDER BY stream, seq")
    players = await conn.fetch("SELECT player_id, currency, balance, seq, last_hash FROM players")
    accounts = await conn.fetch("SELECT account_id, balance FROM accounts")
    balances = {r["account_id"]: r["balance"] for r in accounts}
    heads: dict[str, tuple[int, str]] = {}
    currencies: dict[str, str] = {}
    for r in players:
        balances[player_account(r["player_id"], r["currency"])] = r["balance"]
        heads[r["player_id"]] = (r["seq"], r["last_hash"])
        currencies[r["player_id"]] = r["currency"]
    return LedgerSnapshot([entry_from_row(r) for r in journal], balances, heads, currencies,
                          checkpoint, generation)


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.05, 0.0005 * (2 ** min(attempt, 7))) * random.random())
