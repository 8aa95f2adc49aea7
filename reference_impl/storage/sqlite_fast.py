"""The common bet and win on SQLite in a few statements, without the general planner.

Each function runs inside the caller's write transaction (a savepoint of a group commit) and
either applies the whole operation and returns its answer, or writes nothing and returns
None, and the general transaction script decides (unknown player, currency, funds, rules,
a transaction id already recorded, a round without an open bet). The effects are the ones
:func:`reference_impl.domain.planning.plan_operation` plans, checked against the in-memory
ledger by the storage tests.
"""

from __future__ import annotations

import sqlite3

from reference_impl.domain import HotAccounts, OpResult
from reference_impl.domain.accounts import AccountRef, player_account
from reference_impl.domain.commands import Bet, Win
from reference_impl.domain.journal import chain_hash
from reference_impl.storage.base import Gate
from reference_impl.storage.counting import CountedSqlite

_PLAYER = "SELECT currency, balance, seq, last_hash, limits FROM players WHERE player_id = ?"
_INSERT_TX = (
    "INSERT INTO txs (transaction_id, kind, player_id, fingerprint, round_id, amount, state, "
    "status, balance, currency, ts_us, jackpot, device) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', ?, ?, ?, ?, ?)"
)
_UPDATE_PLAYER = (
    "UPDATE players SET balance = ?, seq = ?, last_hash = ?, version = version + 1 "
    "WHERE player_id = ?"
)
_CREDIT_ACCOUNT = (
    "UPDATE accounts SET balance = balance + ?, version = version + 1 WHERE account_id = ?"
)
_CREATE_ACCOUNT = (
    "INSERT INTO accounts AS a (account_id, kind, currency, balance, version) "
    "VALUES (?, ?, ?, ?, 1) ON CONFLICT (account_id) DO UPDATE SET "
    "balance = a.balance + excluded.balance, version = a.version + 1"
)
_INSERT_ENTRY = (
    "INSERT INTO journal (stream, seq, transaction_id, kind, debit_account, credit_account, "
    "amount, currency, round_id, ts_us, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_OPEN_BET = (
    "SELECT 1 FROM txs WHERE player_id = ? AND round_id = ? AND state = 'open' LIMIT 1"
)
_SETTLE = (
    "UPDATE txs SET state = 'settled' WHERE player_id = ? AND round_id = ? AND state = 'open'"
)


def _record(
    db: CountedSqlite, cmd: Bet | Win, state: str | None, balance: int, currency: str,
    now_us: int, jackpot: int = 0,
) -> bool:
    """Insert the idempotency record; False (nothing written) when the id is taken."""
    try:
        db.execute(_INSERT_TX, (
            cmd.transaction_id, cmd.kind, cmd.player_id, cmd.fingerprint(), cmd.round_id,
            cmd.amount, state, balance, currency, now_us, jackpot, getattr(cmd, "device", None),
        ))
    except sqlite3.IntegrityError:
        return False
    return True


def _post(
    db: CountedSqlite, cmd: Bet | Win, currency: str, seq: int, last_hash: str,
    balance: int, legs: list[tuple[str, int]], now_us: int,
) -> None:
    """Move each leg's amount between the player and its account (player to it for a bet,
    from it for a win), extending the hash chain in order; legs of 0 post nothing."""
    mine = player_account(cmd.player_id, currency)
    for account, amount in legs:
        if amount == 0:
            continue
        debit, credit = (mine, account) if cmd.kind == "bet" else (account, mine)
        seq += 1
        last_hash = chain_hash(
            last_hash, cmd.player_id, seq, cmd.transaction_id, cmd.kind, debit, credit,
            amount, currency, cmd.round_id, now_us,
        )
        db.execute(_INSERT_ENTRY, (
            cmd.player_id, seq, cmd.transaction_id, cmd.kind, debit, credit, amount, currency,
            cmd.round_id, now_us, last_hash,
        ))
    db.execute(_UPDATE_PLAYER, (balance, seq, last_hash, cmd.player_id))
    for account, amount in legs:  # shared rows last, in the planner's order
        if amount == 0:
            continue
        delta = amount if cmd.kind == "bet" else -amount
        if db.execute(_CREDIT_ACCOUNT, (delta, account)).rowcount != 1:
            kind = AccountRef.parse(account).kind.value
            db.execute(_CREATE_ACCOUNT, (account, kind, currency, delta))


def fast_bet(
    db: CountedSqlite, cmd: Bet, now_us: int, hot: HotAccounts, gate: Gate | None,
) -> OpResult | None:
    """A new bet of a known player with funds the rules need not check, or None."""
    row = db.execute(_PLAYER, (cmd.player_id,)).fetchone()
    if row is None:
        return None
    currency, balance, seq, last_hash, limits = row
    if (
        (cmd.currency is not None and cmd.currency != currency) or balance < cmd.amount
        or (gate is not None and not gate.skip("bet", limits))
    ):
        return None
    balance -= cmd.amount
    share = cmd.jackpot_contribution
    if not _record(db, cmd, "open", balance, currency, now_us, share):
        return None
    legs = [(hot.house(currency, cmd.player_id), cmd.amount - share),
            (hot.jackpot(currency, cmd.player_id), share)]
    _post(db, cmd, currency, seq, last_hash, balance, legs, now_us)
    return OpResult(cmd.transaction_id, "ok", balance, currency)


def fast_win(
    db: CountedSqlite, cmd: Win, now_us: int, hot: HotAccounts,
) -> OpResult | None:
    """A new win settling the open bets of its round, or None."""
    row = db.execute(_PLAYER, (cmd.player_id,)).fetchone()
    if row is None:
        return None
    currency, balance, seq, last_hash, _ = row
    if (cmd.currency is not None and cmd.currency != currency) or db.execute(
        _OPEN_BET, (cmd.player_id, cmd.round_id)
    ).fetchone() is None:
        return None
    balance += cmd.amount
    if not _record(db, cmd, None, balance, currency, now_us):
        return None
    db.execute(_SETTLE, (cmd.player_id, cmd.round_id))
    if cmd.amount == 0:
        db.execute("UPDATE players SET version = version + 1 WHERE player_id = ?",
                   (cmd.player_id,))
    else:
        _post(db, cmd, currency, seq, last_hash, balance,
              [(hot.house(currency, cmd.player_id), cmd.amount)], now_us)
    return OpResult(cmd.transaction_id, "ok", balance, currency)
