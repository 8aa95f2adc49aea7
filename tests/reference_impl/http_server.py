"""Real servers for tests: the monolith in a background thread (API tests), and any
topology as a ``testbed serve`` child process that can be killed and restarted."""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn
import yaml

from reference_impl.deployments.monolith import monolith_app
from reference_impl.http.auth import Credentials, SignedAuth, Signer
from reference_impl.http.guard import EdgeConfig
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


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus exposition (None if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def write_credentials(folder: Path, providers: tuple[str, ...] = ("demo-provider",)) -> Path:
    """A credentials file of fresh random secrets (one entry per provider, an operator
    ``platform`` and a staff member ``ops``); never a fixed secret in the repository."""
    path = folder / "credentials.yaml"
    path.write_text(yaml.safe_dump({
        "providers": [{"id": p, "secret": secrets.token_hex(32)} for p in providers],
        "operators": [{"id": "platform", "token": secrets.token_hex(32)}],
        "staff": [{"id": "ops", "token": secrets.token_hex(32)}],
    }))
    return path


def signed(path: Path | None, **kwargs: Any) -> SignedAuth | None:
    """httpx auth signing as the contract says with the file's first provider/operator/staff
    (None: no file, send no auth headers)."""
    if path is None:
        return None
    return SignedAuth(Signer(Credentials.load(path), **kwargs))


@contextmanager
def running_server(config: BackOfficeConfig, edge: EdgeConfig | None = None) -> Iterator[str]:
    """Serve the monolith for the duration of the block; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        monolith_app(config, edge or EdgeConfig()), host="127.0.0.1", port=port,
        log_level="warning",
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
    credentials: Path | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> SignedAuth | None:
        """httpx auth for this server's credentials (None when it runs open)."""
        return signed(self.credentials)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testbed", "serve", "--topology", self.topology,
             "--db", self.db, "--port", str(self.port), "--hot-account-shards", str(self.shards),
             *(["--broker", self.broker] if self.broker else []),
             *(["--workers", str(self.workers)] if self.workers > 1 else []),
             *(["--credentials", str(self.credentials)] if self.credentials else []),
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

    def service_pids(self, wait_s: float = 10.0) -> dict[str, int]:
        """pid of each process of a multi-process deployment (from the public /health). A
        service whose probe timed out under load is reported without its pid (``down``):
        asked again until every service has one, at most ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            body = httpx.get(f"{self.url}/health", timeout=5).json()
            services = body.get("services", {})
            if all("pid" in s for s in services.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        pids = {name: int(s["pid"]) for name, s in services.items() if "pid" in s}
        if pids:
            pids["edge" if self.topology == "hybrid" else "gateway"] = int(body["pid"])
        return pids

    def kill9(self) -> None:
        """kill -9 the whole deployment; every child process must die with it."""
        assert self.proc is not None
        # every descendant, from the process tree: /health may miss a service whose probe
        # timed out under load (seen once in a full run: KeyError 'pid')
        children = [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
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
