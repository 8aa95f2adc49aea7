"""The drill's own event broker: Redis (Streams, append-only file on) or NATS (JetStream,
file store) on a free port, data in the drill's directory, so a stop and a start keep the
streams and their consumer groups as a real broker restart does."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from drills.procs import DrillError, ProcessGroup, free_port_block, wait_port

KINDS = ("redis", "nats")


class BrokerServer:
    """A Redis or NATS server owned by the drill."""

    def __init__(self, group: ProcessGroup, root: Path, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"broker: one of {KINDS}")
        self.group, self.kind, self.root = group, kind, root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port_block(1)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return (f"redis://127.0.0.1:{self.port}/0" if self.kind == "redis"
                else f"nats://127.0.0.1:{self.port}")

    def _cmd(self) -> list[str]:
        if self.kind == "redis":
            exe = shutil.which("redis-server") or "/usr/bin/redis-server"
            return [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                    str(self.root), "--appendonly", "yes", "--save", "", "--daemonize", "no",
                    "--protected-mode", "no"]
        exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
        return [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.root)]

    def start(self) -> None:
        if not Path(self._cmd()[0]).exists():
            raise DrillError(f"{self.kind} server not found ({self._cmd()[0]})")
        self.proc = self.group.spawn(f"broker-{self.kind}", self._cmd())
        wait_port(self.port, self.proc, what=f"{self.kind} server")

    def stop(self) -> None:
        """A clean stop (SIGTERM: Redis flushes its append-only file, NATS its store)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
