"""The general money transaction as a script over a small async connection interface.

Both adapters run it inside their own transaction: load a snapshot, let the domain decide,
ask the rules (with exact usage sums when they need them), apply the plan. SQL uses ``$n``
parameters (the SQLite adapter rewrites them to ``?n``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from reference_impl.domain import AccountRef, HotAccounts, OpResult, PlayerState
from reference_impl.domain.commands import Command, Rollback, Win
from reference_impl.domain.errors import WalletError
from reference_impl.domain.journal import JournalEntry
from reference_impl.domain.planning import (
    APPROVE,
    BetState,
    Plan,
    Snapshot,
    TxRecord,
    checked_kind,
    plan_operation,
    preflight,
)
from reference_impl.rules import Usage
from reference_impl.rules.events import WINDOW_SECONDS as WINDOWS_S
from reference_impl.storage.base import Gate

US = 1_000_000


class Conn(Protocol):
    """The few calls the script needs from a connection inside a transaction."""

    async def fetchrow(self, sql: str, *args: Any) -> Mapping[str, Any] | None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]: ...

    async def execute(self, sql: str, *args: Any) -> int: ...

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...


class VersionConflict(Exception):
    """The player row changed since it was read (optimistic concurrency): retry."""


PLAYER_COLUMNS = "player_id, currency, balance, seq, last_hash, version, limits, identity_verified"
TX_COLUMNS = (
    "transaction_id, kind, player_id, fingerprint, round_id, amount, state, status, balance, "
    "currency, jackpot"
)


def record_from_row(row: Mapping[str, Any]) -> TxRecord:
    """A TxRecord from a ``txs`` row."""
    result = None
    if row["status"] is not None:
        result = OpResult(row["transaction_id"], row["status"], row["balance"], row["currency"])
    state = BetState(row["state"]) if row["state"] is not None else None
    return TxRecord(
        row["transaction_id"], row["kind"], row["player_id"], row["fingerprint"],
        row["round_id"], row["amount"], state, result, row["jackpot"],
    )


def entry_from_row(row: Mapping[str, Any]) -> JournalEntry:
    """A JournalEntry from a ``journal`` row."""
    return JournalEntry(
        row["stream"], row["seq"], row["transaction_id"], row["kind"], row["debit_account"],
        row["credit_account"], row["amount"], row["currency"], row["round_id"], row["ts_us"],
        row["hash"],
    )


async def run_command(
    conn: Conn, cmd: Command, now_us: int, gate: Gate | None, hot: HotAccounts,
    *, lock_player: bool, optimistic: bool,
) -> OpResult:
    """Execute ``cmd`` inside the caller's transaction; raise WalletError or VersionConflict."""
    lock = " FOR UPDATE" if lock_player else ""
    prow = await conn.fetchrow(
        f"SELECT {PLAYER_COLUMNS} FROM players WHERE player_id = $1{lock}", cmd.player_id
    )
    player = None if prow is None else PlayerState(
        prow["player_id"], prow["currency"], prow["balance"], prow["seq"], prow["last_hash"],
        prow["version"],
    )
    existing = await _record(conn, cmd.transaction_id)
    round_bets: tuple[TxRecord, ...] = ()
    target = None
    if isinstance(cmd, Win):
        rows = await conn.fetch(
            f"SELECT {TX_COLUMNS} FROM txs WHERE player_id = $1 AND round_id = $2 "
            "AND state IS NOT NULL", cmd.player_id, cmd.round_id,
        )
        round_bets = tuple(record_from_row(r) for r in rows)
    elif isinstance(cmd, Rollback):
        target = await _record(conn, cmd.rolled_back_transaction_id)
    snap = Snapshot(player, existing, round_bets, target)
    try:
        replay = preflight(cmd, snap)
        if replay is not None:
            return replay
        assert player is not None and prow is not None
        verdict = APPROVE
        kind = checked_kind(cmd)
        if kind is not None and gate is not None and not gate.skip(kind, prow["limits"]):
            usage = None
            if gate.needs_usage(kind, prow["limits"]):
                usage = await load_usage(conn, player.player_id, now_us,
                                         bool(prow["identity_verified"]))
            verdict = gate.verdict(kind, prow["limits"], usage, getattr(cmd, "amount", 0), now_us)
        plan = plan_operation(cmd, snap, now_us, hot, verdict)
    except WalletError:
        if optimistic and player is not None and await _moved(conn, player):
            raise VersionConflict(player.player_id) from None
        raise
    await apply_plan(conn, plan, player, now_us, optimistic=optimistic)
    return plan.result


async def _moved(conn: Conn, player: PlayerState) -> bool:
    """True when the player row changed since ``player`` was read.

    Without row locks each read of the script may see another committed state (READ
    COMMITTED takes a snapshot per statement): a refusal decided on such a mixed view (the id
    unseen, yet its round already settled by the twin that committed in between) must be
    re-decided on a fresh read. Every money effect bumps the player's version, so an unchanged
    version proves every read saw the same state.
    """
    row = await conn.fetchrow("SELECT version FROM players WHERE player_id = $1",
                              player.player_id)
    return row is None or row["version"] != player.version


async def _record(conn: Conn, transaction_id: str) -> TxRecord | None:
    row = await conn.fetchrow(
        f"SELECT {TX_COLUMNS} FROM txs WHERE transaction_id = $1", transaction_id
    )
    return None if row is None else record_from_row(row)


async def apply_plan(
    conn: Conn, plan: Plan, player: PlayerState, now_us: int, *, optimistic: bool
) -> None:
    """Write every effect of ``plan``; VersionConflict when the player row moved (optimistic)."""
    sql = (
        "UPDATE players SET balance = balance + $2, seq = $3, last_hash = $4, "
        "version = version + 1 WHERE player_id = $1"
    )
    args: list[Any] = [player.player_id, plan.player_delta, plan.new_seq, plan.new_hash]
    if optimistic:
        sql += " AND version = $5"
        args.append(player.version)
    if await conn.execute(sql, *args) != 1:
        raise VersionConflict(player.player_id)
    for account, delta in plan.system_deltas.items():
        ref = AccountRef.parse(account)
        await conn.execute(
            "INSERT INTO accounts AS a (account_id, kind, currency, balance, version) "
            "VALUES ($1, $2, $3, $4, 1) ON CONFLICT (account_id) DO UPDATE SET "
            "balance = a.balance + excluded.balance, version = a.version + 1",
            account, ref.kind.value, ref.currency, delta,
        )
    for record in (plan.record, plan.tombstone):
        if record is None:
            continue
        result = record.result
        await conn.execute(
            "INSERT INTO txs (transaction_id, kind, player_id, fingerprint, round_id, amount, "
            "state, status, balance, currency, ts_us, jackpot, instrument, device) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            record.transaction_id, record.kind, record.player_id, record.fingerprint,
            record.round_id, record.amount,
            None if record.state is None else record.state.value,
            None if result is None else result.status,
            None if result is None else result.balance,
            None if result is None else result.currency, now_us, record.jackpot,
            record.instrument, record.device,
        )
    for txid, state in plan.bet_updates:
        await conn.execute("UPDATE txs SET state = $2 WHERE transaction_id = $1", txid, state.value)
    for e in plan.entries:
        await conn.execute(
            "INSERT INTO journal (stream, seq, transaction_id, kind, debit_account, "
            "credit_account, amount, currency, round_id, ts_us, hash) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            e.stream, e.seq, e.transaction_id, e.kind, e.debit_account, e.credit_account,
            e.amount, e.currency, e.round_id, e.ts_us, e.hash,
        )


async def load_usage(conn: Conn, player_id: str, now_us: int, verified: bool) -> Usage:
    """Exact sums over the player's journal for the windows ending at ``now_us``."""
    start = {name: now_us - seconds * US for name, seconds in WINDOWS_S.items()}
    row = await conn.fetchrow(
        "SELECT MAX(ts_us) AS last FROM txs WHERE player_id = $1 AND kind = 'withdrawal' "
        "AND status = 'ok' AND ts_us > $2", player_id, start["30d"],
    )
    since = max(start["30d"], row["last"] if row and row["last"] is not None else start["30d"])
    rows = await conn.fetch(
        "SELECT kind, "
        "CAST(SUM(CASE WHEN ts_us > $2 THEN amount ELSE 0 END) AS BIGINT) AS w24h, "
        "CAST(SUM(CASE WHEN ts_us > $3 THEN amount ELSE 0 END) AS BIGINT) AS w7d, "
        "CAST(SUM(amount) AS BIGINT) AS w30d, "
        "CAST(SUM(CASE WHEN ts_us > $5 THEN amount ELSE 0 END) AS BIGINT) AS since "
        "FROM journal WHERE stream = $1 AND ts_us > $4 GROUP BY kind",
        player_id, start["24h"], start["7d"], start["30d"], since,
    )
    sums: dict[str, dict[str, int]] = {
        r["kind"]: {"24h": r["w24h"], "7d": r["w7d"], "30d": r["w30d"], "since": r["since"]}
        for r in rows
    }
    zero = {"24h": 0, "7d": 0, "30d": 0, "since": 0}
    dep, wd = sums.get("deposit", zero), sums.get("withdrawal", zero)
    bet, rb, win = sums.get("bet", zero), sums.get("rollback", zero), sums.get("win", zero)
    stakes = {w: max(0, bet[w] - rb[w]) for w in WINDOWS_S}
    return Usage(
        deposits={w: dep[w] for w in WINDOWS_S}, stakes=stakes,
        wins={w: win[w] for w in WINDOWS_S},
        deposits_since_last_withdrawal=dep["since"],
        stakes_since_last_withdrawal=max(0, bet["since"] - rb["since"]),
        cash_movements_24h=dep["24h"] + wd["24h"], identity_verified=verified,
    )
