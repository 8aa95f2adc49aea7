"""A throw-away PostgreSQL database for one benchmark case: created on the shared server
(``TESTBED_PG_ADMIN``, default the local trust server), handed to the case, dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

PG_ADMIN = os.environ.get("TESTBED_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


async def with_pg_database(prefix: str, body: Callable[[str], Awaitable[Any]]) -> Any:
    """Run ``body(url)`` on a fresh database named ``<prefix>_<random>``; drop it after."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    try:
        return await body(PG_ADMIN.rsplit("/", 1)[0] + "/" + name)
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()
