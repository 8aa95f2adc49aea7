"""The latency proxy: bytes pass both ways unchanged and in order; the caller's bytes wait
the delay only while it is on (a real echo server, the proxy as its own process)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from drills.procs import free_port_block, wait_port

PAYLOAD = bytes(range(256)) * 64  # 16 kB: several chunks


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _round_trip(port: int) -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t = time.perf_counter()
    writer.write(PAYLOAD)
    await writer.drain()
    got = await reader.readexactly(len(PAYLOAD))
    elapsed = time.perf_counter() - t
    writer.close()
    return elapsed, got


def test_delay_only_while_on(tmp_path: Path) -> None:
    async def main() -> None:
        echo_port = free_port_block(2)
        proxy_port = echo_port + 1
        server = await asyncio.start_server(_echo, "127.0.0.1", echo_port)
        control = tmp_path / "ms"
        control.write_text("0")
        proc = subprocess.Popen([sys.executable, "-m", "drills.proxy", "--listen",
                                 str(proxy_port), "--target", str(echo_port), "--control",
                                 str(control)])
        try:
            await asyncio.get_running_loop().run_in_executor(None, wait_port, proxy_port, proc)
            fast, got = await _round_trip(proxy_port)
            assert got == PAYLOAD
            control.write_text("300")
            proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(0.2)
            slow, got = await _round_trip(proxy_port)
            assert got == PAYLOAD
            control.write_text("0")
            proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(0.2)
            again, _ = await _round_trip(proxy_port)
        finally:
            proc.terminate()
            proc.wait(10)
            server.close()
        assert slow >= 0.3 > fast
        assert again < 0.3
    asyncio.run(main())
