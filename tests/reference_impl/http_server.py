"""Real servers for tests: the monolith in a background thread (API tests), and any
topology as a ``testbed serve`` child process that can be killed and restarted."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn

from reference_impl.deployments.monolith import monolith_app
from reference_impl.services.backoffice import BackOfficeConfig

TEST_PORTS = (20_000, 32_000)


START_TIMEOUT_S = 120
"""A deployment of five processes takes ~35 s to answer on this 2-core machine when other
jobs load it (load average 20 measured); 45 s was too short when four start at once."""

def free_port() -> int:
    """A TCP port nobody listens on right now, below the kernel's ephemeral range (where
    ``testbed serve`` picks its internal ports), so deployments started side by side by a
    test cannot take each other's public port."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(*TEST_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


@contextmanager
def running_server(config: BackOfficeConfig) -> Iterator[str]:
    """Serve the monolith for the duration of the block; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        monolith_app(config), host="127.0.0.1", port=port, log_level="warning",
        access_log=False,
    ))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        raise RuntimeError("server did not start")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Server:
    """The back office as a child process that can be killed and restarted."""

    db: str
    topology: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    shards: int = 2
    broker: str | None = None
    workers: int = 1
    extra_args: tuple[str, ...] = ()  # more ``testbed serve`` options

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testbed", "serve", "--topology", self.topology,
             "--db", self.db, "--port", str(self.port), "--hot-account-shards", str(self.shards),
             *(["--broker", self.broker] if self.broker else []),
             *(["--workers", str(self.workers)] if self.workers > 1 else []),
             *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "server exited"
            try:
                r = httpx.get(f"{self.url}/health", timeout=0.5)
                if r.status_code == 200:
                    # the answer must be ours: the public API of this topology
                    assert ("services" in r.json()) == (self.topology != "monolith"), r.text
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def service_pids(self) -> dict[str, int]:
        """pid of each process of a multi-process deployment (from the public /health)."""
        body = httpx.get(f"{self.url}/health", timeout=5).json()
        pids = {name: int(s["pid"]) for name, s in body.get("services", {}).items()}
        if pids:
            pids["edge" if self.topology == "hybrid" else "gateway"] = int(body["pid"])
        return pids

    def kill9(self) -> None:
        """kill -9 the whole deployment; every child process must die with it."""
        assert self.proc is not None
        children = list(self.service_pids().values())
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in children):
            assert time.monotonic() < deadline, "orphans outlived the supervisor"
            time.sleep(0.05)

    def kill9_service(self, name: str) -> int:
        """kill -9 one service; the supervisor restarts it. Returns the killed pid."""
        pid = self.service_pids()[name]
        os.kill(pid, signal.SIGKILL)
        return pid

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C (SIGINT); the exit code once stopped."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def gone(pid: int) -> bool:
    """True when ``pid`` is dead (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def purge_broker(db: str, broker: str | None = None) -> None:
    """Delete the deployment's streams from the broker (Redis by default)."""
    import asyncio

    from reference_impl.transport.broker import DEFAULT_BROKER, broker_prefix, open_event_bus

    async def purge() -> None:
        bus = open_event_bus(broker or DEFAULT_BROKER, broker_prefix(db), "cleaner")
        await bus.purge()
        await bus.stop()

    asyncio.run(purge())
