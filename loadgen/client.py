"""A lean asyncio HTTP/1.1 client over keep-alive connections (no pipelining).

Why our own: the open-loop generator must send at intended times whatever the server does
and cost little per request. Measured here (``benchmarks/bench_loadgen.py``), locust's
``FastHttpUser`` spends several times more generator CPU per request than this client,
and httpx more still; an ``asyncio.Protocol`` with callbacks (no task per request) and
hand-written request bytes is what reaches the issue's 15,000 requests/s per generator core.

Scope, on purpose small: responses framed by ``Content-Length`` (what the back office and
any Starlette/uvicorn app send); a chunked or unframed answer fails the request with
:data:`UNSUPPORTED_RESPONSE` and closes the connection. A lost connection fails its request
with :data:`CONNECTION_ERROR`. Each connection carries one request at a time; the pool opens
a new connection when none is idle, up to the caller's limit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from loadgen.signing import Signer

CONNECTION_ERROR = "CONNECTION_ERROR"
UNSUPPORTED_RESPONSE = "UNSUPPORTED_RESPONSE"
MAX_HEAD_BYTES = 16_384
"""A response head longer than this is refused (protects the parser's buffer)."""

Done = Callable[[int, bytes, str | None], None]
"""Callback of one exchange: (status, body, transport error code or None)."""


def parse_target(url: str) -> tuple[str, int, str]:
    """(host, port, Host header) of an ``http://host:port`` target; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"target {url!r}: expected http://host:port (plain HTTP/1.1)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"target {url!r}: give the base URL only, without a path")
    port = parts.port or 80
    return parts.hostname, port, parts.netloc


class Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.done: Done | None = None
        self.queued: bytes | None = None
        self.closed = False
        pool.conns.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        if self.queued is not None:
            transport.write(self.queued)
            self.queued = None

    def send(self, raw: bytes, done: Done) -> None:
        assert self.done is None, "one exchange at a time per connection"
        self.done = done
        if self.transport is None:
            self.queued = raw
        else:
            self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self.fail(UNSUPPORTED_RESPONSE)
            return
        head = bytes(buf[:end]).lower()
        i = head.find(b"\r\ncontent-length:")
        if i < 0:
            self.fail(UNSUPPORTED_RESPONSE)
            return
        j = head.find(b"\r\n", i + 17)
        length = int(head[i + 17: j if j >= 0 else None])
        total = end + 4 + length
        if len(buf) < total:
            return
        status = int(buf[9:12])
        body = bytes(buf[end + 4: total])
        del buf[:total]
        done, self.done = self.done, None
        keep = b"\r\nconnection: close" not in head
        if keep:
            self.pool.release(self)
        else:
            self.close()
        if done is not None:
            done(status, body, None)

    def fail(self, code: str) -> None:
        done, self.done = self.done, None
        self.close()
        if done is not None:
            done(0, b"", code)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.open_count -= 1
            self.pool.conns.discard(self)
            if self.transport is not None:
                self.transport.close()
            self.pool.replace_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool.idle:
            self.pool.idle.remove(self)
        self.fail(CONNECTION_ERROR)


class Pool:
    """Keep-alive connections to one target; :meth:`send` never waits. With
    ``max_connections``, a request finding every connection busy waits in a FIFO for the
    next one freed (as wrk2's fixed connections do; an open loop still counts its latency
    from its intended time), instead of opening another: measured, a busy back office
    answered a new connection's first request up to 8 s late (every request over 0.5 s in
    a 60 s run at 3,500/s was on a connection opened mid-run)."""

    def __init__(self, target: str, signer: Signer, max_connections: int | None = None
                 ) -> None:
        assert max_connections is None or max_connections >= 1
        self.host, self.port, host_header = parse_target(target)
        self.signer = signer
        self.max_connections = max_connections
        self.waiting: deque[tuple[bytes, Done]] = deque()
        # the least recently used first: every connection of the pool stays busy enough
        # that the server never closes it as idle (uvicorn: after 5 s) and none needs
        # replacing mid-window
        self.idle: deque[Connection] = deque()
        self.conns: set[Connection] = set()
        self.open_count = 0
        self._host_line = f"Host: {host_header}\r\n".encode()
        self._loop = asyncio.get_running_loop()
        self._connecting: set[asyncio.Task[object]] = set()

    def encode(self, method: str, path: str, body: bytes) -> bytes:
        """The request's bytes, signed now (a retry calls this again: new nonce)."""
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_line
        for name, value in self.signer.headers(method, path, body):
            head += f"{name}: {value}\r\n".encode()
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: "
            head += str(len(body)).encode() + b"\r\n"
        return head + b"\r\n" + body

    def send(self, method: str, path: str, body: bytes, done: Done) -> None:
        """Send on an idle connection, or on a new one (connected in the background), or,
        at ``max_connections``, when one is freed."""
        raw = self.encode(method, path, body)
        if self.idle:
            self.idle.popleft().send(raw, done)
            return
        if self.max_connections is not None and self.open_count >= self.max_connections:
            self.waiting.append((raw, done))
            return
        self._open(raw, done)

    def release(self, conn: Connection) -> None:
        """``conn`` finished an exchange: the oldest waiting request, else idle."""
        if self.waiting:
            conn.send(*self.waiting.popleft())
        else:
            self.idle.append(conn)

    def replace_closed(self) -> None:
        """A connection closed: open one for the oldest waiting request, if any."""
        if self.waiting and (self.max_connections is None
                             or self.open_count < self.max_connections):
            self._open(*self.waiting.popleft())

    def _open(self, raw: bytes, done: Done) -> None:
        conn = Connection(self)
        self.open_count += 1
        conn.send(raw, done)
        task = self._loop.create_task(self._connect(conn))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: Connection) -> None:
        try:
            await self._loop.create_connection(lambda: conn, self.host, self.port)
        except OSError:
            conn.fail(CONNECTION_ERROR)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes,
                                                                               str | None]:
        """Awaitable form of :meth:`send` (set-up and tools; not the measured path)."""
        fut: asyncio.Future[tuple[int, bytes, str | None]] = self._loop.create_future()

        def done(status: int, payload: bytes, err: str | None) -> None:
            if not fut.done():
                fut.set_result((status, payload, err))

        self.send(method, path, body, done)
        return await fut

    async def warm(self, n: int, path: str = "/health") -> int:
        """Open connections until at least ``n`` are idle, each having answered one ``path``
        request. Measured: under load the back office answers a new connection's first
        request hundreds of ms late (200 opened at once at 4,500 requests/s: up to 430 ms),
        and an open loop that opens connections mid-window when a short stall fills its
        idle ones measures that (median 500 ms over 1,150 such requests) as the server's
        latency. Real callers keep pools of connections; so does the generator, opened
        here before the window. Returns how many are idle."""
        missing = n - len(self.idle)
        if missing > 0:
            await asyncio.gather(*(self.request("GET", path) for _ in range(missing)))
        return len(self.idle)

    def abort(self) -> None:
        """Drop every connection now; outstanding requests fail with CONNECTION_ERROR."""
        while self.waiting:
            self.waiting.popleft()[1](0, b"", CONNECTION_ERROR)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
            conn.fail(CONNECTION_ERROR)

    def close(self) -> None:
        """Close the idle connections (busy ones finish their exchange first)."""
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()
