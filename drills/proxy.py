"""A TCP proxy the drill puts in front of one service's port (``python -m drills.proxy``):
forwards bytes both ways, and holds each chunk of one direction (``--direction up``: what
the caller sends; ``down``: what it receives) for the current delay before passing it on
(order kept; the other direction is not delayed). The delay in milliseconds is
read from the control file on SIGUSR1, so the drill turns a latency fault on and off
without touching the network of the machine.

The proxy is in place for the whole drill (its own cost is in the baseline, not only in
the fault window). Each connection's chunks wait in a queue of at most
:data:`MAX_PENDING_CHUNKS`; past that the proxy stops reading from the caller (TCP
back-pressure), it never drops bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

MAX_PENDING_CHUNKS = 1024
CHUNK_BYTES = 65_536


class Delay:
    """The delay in force, re-read from ``control`` on SIGUSR1."""

    def __init__(self, control: Path) -> None:
        self.control, self.seconds = control, 0.0

    def reload(self) -> None:
        try:
            ms = float(self.control.read_text().strip() or 0)
        except (OSError, ValueError):
            ms = 0.0
        self.seconds = max(0.0, ms) / 1000.0


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                delay: Delay | None) -> None:
    """Copy ``src`` to ``dst``; with ``delay``, each chunk waits the delay in force when it
    arrived (order kept), and when ``src`` ends the bytes still held are dropped, not
    delivered: what a crashed sender had in flight dies with it (a failover's lost writes).
    Without ``delay`` everything read is delivered before ``dst`` is closed."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(MAX_PENDING_CHUNKS)

    async def deliver() -> None:
        while (item := await pending.get()) is not None:
            due, data = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            dst.write(data)
            await dst.drain()

    sender = asyncio.create_task(deliver())
    try:  # the undelayed direction goes through the queue too (due at once): order kept
        while data := await src.read(CHUNK_BYTES):
            seconds = delay.seconds if delay is not None else 0.0
            await pending.put((loop.time() + seconds, data))
    except OSError:
        pass
    finally:
        if delay is None:
            await pending.put(None)
            with contextlib.suppress(OSError):
                await sender
        sender.cancel()
        dst.close()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int,
                 delay: Delay, direction: str) -> None:
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pump(reader, up_w, delay if direction == "up" else None),
                         _pump(up_r, writer, delay if direction == "down" else None),
                         return_exceptions=True)


async def main_async(listen: int, target: int, control: Path, direction: str = "up") -> None:
    delay = Delay(control)
    delay.reload()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, delay.reload)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(lambda r, w: _serve(r, w, target, delay, direction),
                                        "127.0.0.1", listen)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--control", type=Path, required=True)
    ap.add_argument("--direction", choices=("up", "down"), default="up",
                    help="delay what the caller sends (up: requests) or what it receives "
                         "(down: a primary's WAL stream to its replica)")
    a = ap.parse_args()
    asyncio.run(main_async(a.listen, a.target, a.control, a.direction))


if __name__ == "__main__":
    main()
