"""Offline ledger maintenance behind ``testbed ledger``: open the storage, run, close."""

from __future__ import annotations

import asyncio

from reference_impl.domain import AuditReport
from reference_impl.domain.rebuild import RebuildPlan
from reference_impl.storage import StorageSettings, open_storage


def run_verify(db: str | None, *, full: bool = False) -> AuditReport:
    """Audit the ledger at ``db`` (None: the default SQLite file); ``full`` re-checks the
    whole journal from genesis instead of the entries after the last checkpoint."""

    async def main() -> AuditReport:
        storage = await open_storage(db, StorageSettings(pool_size=2))
        try:
            return await storage.audit(full=full)
        finally:
            await storage.close()

    return asyncio.run(main())


def run_rebuild(db: str | None, *, apply: bool) -> RebuildPlan:
    """Rebuild balances and chain heads at ``db`` from its journal (see Storage)."""

    async def main() -> RebuildPlan:
        storage = await open_storage(db, StorageSettings(pool_size=2))
        try:
            return await storage.rebuild_balances(apply=apply)
        finally:
            await storage.close()

    return asyncio.run(main())
