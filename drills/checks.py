"""After a drill: is every acknowledged money operation in the ledger, does the back office's
own audit pass (``GET /audit/verify``), and does ``testbed ledger verify`` exit 0."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from drills.environment import Environment
from drills.procs import DrillError
from drills.traffic import Acks

AUDIT_TIMEOUT_S = 120.0


@dataclass
class LedgerCheck:
    """What the ledger says about the drill."""

    acknowledged: int
    lost: list[str]  # acknowledged, absent from the ledger
    lost_in_journal: int  # of those, present in the journal (must be 0: txs and journal agree)
    audit_ok: bool
    audit: dict[str, Any] = field(default_factory=dict)
    ledger_verify_exit: int = -1
    ledger_verify: str = ""
    lost_acked_at_s: list[float] = field(default_factory=list)  # when each lost one was acked

    @property
    def ok(self) -> bool:
        return self.audit_ok and self.ledger_verify_exit == 0 and self.lost_in_journal == 0

    def to_json(self) -> dict[str, Any]:
        return {"acknowledged": self.acknowledged, "lost": len(self.lost),
                "lost_ids": self.lost[:50], "lost_in_journal": self.lost_in_journal,
                "lost_acked_at_s": self.lost_acked_at_s[:50],
                "audit_ok": self.audit_ok, "audit": self.audit,
                "ledger_verify_exit": self.ledger_verify_exit,
                "ledger_verify": self.ledger_verify}


def _unscoped(stored: str) -> str:
    """A stored id without its caller's namespace (``caller:id``, see the HTTP layer)."""
    return stored.partition(":")[2] or stored


async def _pg_ids(url: str) -> tuple[set[str], set[str]]:
    conn = await asyncpg.connect(url)
    try:
        txs = {_unscoped(r[0]) for r in await conn.fetch("SELECT transaction_id FROM txs")}
        journal = {_unscoped(r[0])
                   for r in await conn.fetch("SELECT DISTINCT transaction_id FROM journal")}
    finally:
        await conn.close()
    return txs, journal


def _sqlite_ids(path: str) -> tuple[set[str], set[str]]:
    conn = sqlite3.connect(path, timeout=60)
    try:
        txs = {_unscoped(r[0]) for r in conn.execute("SELECT transaction_id FROM txs")}
        journal = {_unscoped(r[0])
                   for r in conn.execute("SELECT DISTINCT transaction_id FROM journal")}
    finally:
        conn.close()
    return txs, journal


def ledger_ids(env: Environment) -> tuple[set[str], set[str]]:
    """Transaction ids in ``txs`` and in ``journal`` (caller namespace removed)."""
    if env.pg is not None:
        return asyncio.run(_pg_ids(env.db_url))
    assert env.sqlite_path is not None
    return _sqlite_ids(str(env.sqlite_path))


def audit_verify(env: Environment) -> dict[str, Any]:
    """``GET /audit/verify`` as back-office staff."""
    assert env.office is not None
    r = httpx.get(f"{env.office.url}/audit/verify", timeout=AUDIT_TIMEOUT_S,
                  headers={"Authorization": f"Bearer {env.creds.staff_token}"})
    try:
        doc: dict[str, Any] = r.json()
    except ValueError:
        doc = {"status": r.status_code, "body": r.text[:500]}
    doc.setdefault("http_status", r.status_code)
    return doc


def check_ledger(env: Environment, acks: Acks) -> LedgerCheck:
    """Every check above, on the drill's (still running) back office and database;
    DrillError when the database or the back office cannot be read."""
    try:
        txs, journal = ledger_ids(env)
        audit = audit_verify(env)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error,
            httpx.HTTPError) as exc:
        raise DrillError(f"the ledger checks could not read the drill's back office or "
                         f"database: {exc!r}") from exc
    lost = sorted(tx for tx in acks.seen if tx not in txs)
    verify = env.ledger_verify()
    try:
        summary = json.dumps(json.loads(verify.stdout).get("counts", {}))
    except ValueError:
        summary = (verify.stdout + verify.stderr)[-500:]
    return LedgerCheck(
        acknowledged=len(acks.seen), lost=lost,
        lost_in_journal=sum(tx in journal for tx in lost),
        audit_ok=bool(audit.get("ok")) and audit.get("http_status") == 200, audit=audit,
        ledger_verify_exit=verify.returncode, ledger_verify=summary,
    )
