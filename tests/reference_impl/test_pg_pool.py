"""The lean asyncpg pool: capacity, reuse, and broken connections never handed out again."""

from __future__ import annotations

import asyncio

import pytest

from reference_impl.storage.pg_pool import LeanPool
from tests.reference_impl.conftest import PG_ADMIN

pytestmark = pytest.mark.postgres


def test_capacity_reuse_and_discard() -> None:
    async def main() -> None:
        pool = LeanPool(PG_ADMIN, 2)
        inside, peak = 0, 0

        async def hold() -> int:
            nonlocal inside, peak
            async with pool.acquire() as conn:
                inside += 1
                peak = max(peak, inside)
                pid: int = await conn.fetchval("SELECT pg_backend_pid()")
                await asyncio.sleep(0.05)
                inside -= 1
                return pid

        pids = await asyncio.gather(*(hold() for _ in range(6)))
        assert peak == 2 and len(set(pids)) == 2 and pool.open_connections == 2

        with pytest.raises(asyncio.TimeoutError):  # cancelled mid-query: dropped
            async with pool.acquire() as conn:
                await asyncio.wait_for(conn.execute("SELECT pg_sleep(5)"), 0.1)
        assert pool.open_connections == 1

        async with pool.acquire() as conn:  # given back inside a transaction: dropped
            tx = conn.transaction()
            await tx.start()
        assert pool.open_connections == 0

        async with pool.acquire() as conn:  # a server error leaves the connection usable
            with pytest.raises(Exception, match="division by zero"):
                await conn.fetchval("SELECT 1 / 0")
        assert pool.open_connections == 1
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 41 + 1") == 42
        await pool.close()
        assert pool.open_connections == 0
        with pytest.raises(RuntimeError, match="closed"):
            async with pool.acquire():
                pass

    asyncio.run(main())


def test_idle_connections_the_server_closed_are_not_handed_out() -> None:
    """After a database restart or failover every idle connection is dead; each one must
    not cost a failed request (found by ``testbed drill --fault db-failover``)."""
    async def main() -> None:
        pool = LeanPool(PG_ADMIN, 3)

        async def pid() -> int:
            async with pool.acquire() as conn:
                await asyncio.sleep(0.02)  # all three open at once
                value: int = await conn.fetchval("SELECT pg_backend_pid()")
                return value

        pids = set(await asyncio.gather(pid(), pid(), pid()))
        assert len(pids) == 3 and pool.open_connections == 3
        import asyncpg

        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) p",
                            list(pids))
        await admin.close()
        await asyncio.sleep(0.2)  # the client sees the sockets close
        for _ in range(3):
            assert await pid() not in pids  # a fresh connection each time, no error
        await pool.close()

    asyncio.run(main())
