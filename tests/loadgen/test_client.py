"""The open loop's HTTP client: a fixed pool of keep-alive connections (loadgen/client.py)."""

from __future__ import annotations

import asyncio

from loadgen.client import CONNECTION_ERROR, Pool
from loadgen.signing import Signer


async def _server(delay_s: float, close_after: int | None = None
                  ) -> tuple[asyncio.Server, int, list[int]]:
    """A tiny HTTP/1.1 server answering every request after ``delay_s``; it counts the
    connections it accepted and, with ``close_after``, closes each connection after that many
    answers."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1]
                await asyncio.sleep(delay_s)
                body = path
                close = close_after is not None and answered + 1 >= close_after
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + str(len(body)).encode()
                             + (b"\r\nconnection: close" if close else b"") + b"\r\n\r\n" + body)
                await writer.drain()
                answered += 1
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, accepted


def test_a_full_pool_queues_requests_in_order_instead_of_opening_more() -> None:
    async def main() -> None:
        server, port, accepted = await _server(0.02)
        pool = Pool(f"http://127.0.0.1:{port}", Signer(None), max_connections=2)
        assert await pool.warm(2) == 2
        answers: list[bytes] = []
        done = asyncio.Event()

        def record(status: int, body: bytes, err: str | None) -> None:
            assert status == 200 and err is None
            answers.append(body)
            if len(answers) == 6:
                done.set()

        for i in range(6):
            pool.send("GET", f"/r{i}", b"", record)
        assert len(pool.waiting) == 4 and pool.open_count == 2
        await asyncio.wait_for(done.wait(), 5)
        assert sorted(answers) == [f"/r{i}".encode() for i in range(6)]
        # first in, first sent: the waiting ones went out two by two, in their order
        assert [set(answers[i:i + 2]) for i in (0, 2, 4)] == [
            {b"/r0", b"/r1"}, {b"/r2", b"/r3"}, {b"/r4", b"/r5"}]
        assert len(accepted) == 2  # never a third connection
        pool.close()
        server.close()

    asyncio.run(main())


def test_a_closed_connection_is_replaced_for_the_waiting_requests() -> None:
    async def main() -> None:
        server, port, accepted = await _server(0.01, close_after=1)
        pool = Pool(f"http://127.0.0.1:{port}", Signer(None), max_connections=1)
        results = await asyncio.wait_for(
            asyncio.gather(*(pool.request("GET", f"/x{i}") for i in range(3))), 5)
        assert [r[0] for r in results] == [200, 200, 200]
        assert len(accepted) == 3 and pool.open_count <= 1
        server.close()

    asyncio.run(main())


def test_abort_fails_the_waiting_requests_too() -> None:
    async def main() -> None:
        server, port, _ = await _server(1.0)
        pool = Pool(f"http://127.0.0.1:{port}", Signer(None), max_connections=1)
        errors: list[str | None] = []
        for i in range(3):
            pool.send("GET", f"/y{i}", b"", lambda s, b, e: errors.append(e))
        await asyncio.sleep(0.05)
        pool.abort()
        assert errors.count(CONNECTION_ERROR) == 3
        server.close()

    asyncio.run(main())


def test_idle_connections_take_turns() -> None:
    # least recently used first: at a low rate every pooled connection still carries
    # requests, so none sits idle long enough for the server to close it
    async def main() -> None:
        served: dict[int, int] = {}

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            me = len(served)
            served[me] = 0
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    served[me] += 1
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool(f"http://127.0.0.1:{port}", Signer(None), max_connections=4)
        await pool.warm(4)
        for i in range(8):
            await pool.request("GET", f"/z{i}")
        assert sorted(served.values()) == [3, 3, 3, 3]  # one warm-up each, then 2 each
        pool.close()
        server.close()

    asyncio.run(main())
