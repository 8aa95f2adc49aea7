"""The back office under drill: ``testbed serve`` of the topology as a child process, with
credentials, the drill's database and broker, and (for latency faults) a TCP proxy in front
of an internal service. Finds the process of each service (to kill or stop it) from the
processes' own spec, and keeps the monolith running: ``testbed serve`` supervises the
services of microservices and hybrid, but the monolith is one process with no supervisor,
so the drill's watcher restarts it when it dies (as systemd or Kubernetes would)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import yaml

from drills.faults import public_role, topology_roles
from drills.limits import STARTUP_TIMEOUT_S
from drills.procs import DrillError, ProcessGroup, free_port_block, wait_port
from reference_impl.deployments.registry import ROLES

SPEC_ENV = "TESTBED_CHILD_SPEC"  # what reference_impl.deployments.spec puts in a child's env
WATCH_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Secrets:
    """The credentials file of the drill's back office and the tokens the drill uses."""

    path: Path
    staff_token: str

    @classmethod
    def write(cls, root: Path) -> Secrets:
        staff = secrets.token_hex(24)
        doc = {"providers": [{"id": "drill-provider", "secret": secrets.token_hex(24)}],
               "operators": [{"id": "drill-platform", "token": secrets.token_hex(24)}],
               "staff": [{"id": "drill-ops", "token": staff}]}
        path = root / "credentials.yaml"
        path.write_text(yaml.safe_dump(doc))
        os.chmod(path, 0o600)
        return cls(path, staff)


class BackOffice:
    """One ``testbed serve`` of ``topology``; :meth:`pid_of` names each service's process."""

    def __init__(self, group: ProcessGroup, topology: str, db_url: str, broker_url: str,
                 creds: Secrets, proxied: dict[str, int] | None = None,
                 rpc_policy: Path | None = None) -> None:
        self.group, self.topology, self.db_url = group, topology, db_url
        self.broker_url, self.creds, self.rpc_policy = broker_url, creds, rpc_policy
        internal = [r for r in topology_roles(topology) if not ROLES[r].public]
        self.base = free_port_block(1 + len(internal))
        self.port = self.base
        self.internal_ports = {r: self.base + 1 + i for i, r in enumerate(internal)}
        self.proxied = proxied or {}  # service -> port of the proxy in front of it
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts: list[float] = []  # monotonic times the drill's watcher restarted it
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "testbed", "serve", "--topology", self.topology,
               "--db", self.db_url, "--port", str(self.port),
               "--credentials", str(self.creds.path)]
        if self.topology != "monolith":
            cmd += ["--broker", self.broker_url, "--internal-base-port", str(self.base + 1)]
            for name, port in self.proxied.items():
                cmd += ["--peer", f"{name}=http://127.0.0.1:{port}"]
            if self.rpc_policy is not None:
                cmd += ["--rpc-policy", str(self.rpc_policy)]
        return cmd

    def start(self) -> None:
        """Start and wait until ``/health`` answers 200 (every service up)."""
        self._spawn()
        self.wait_healthy()
        if self.topology == "monolith":
            self._watcher = threading.Thread(target=self._watch, name="drill-monolith-watch",
                                             daemon=True)
            self._watcher.start()

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TESTBED_CREDENTIALS"}
        self.proc = self.group.spawn("testbed-serve", self.command(), env=env)

    def wait_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        assert self.proc is not None
        wait_port(self.port, self.proc, timeout_s, what="testbed serve")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DrillError(f"testbed serve exited with {self.proc.returncode} "
                                 f"(see {self.group.log_dir}/testbed-serve.log)")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DrillError(f"the back office was not healthy within {timeout_s:g} s")

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            if self.proc is not None and self.proc.poll() is not None:
                self.restarts.append(time.monotonic())
                self._spawn()

    def pid_of(self, service: str) -> int:
        """The process of ``service`` now (it changes when a service is restarted)."""
        assert self.proc is not None
        if self.topology == "monolith" or service == "monolith":
            return self.proc.pid
        try:
            children = psutil.Process(self.proc.pid).children(recursive=False)
        except psutil.NoSuchProcess as exc:
            raise DrillError("testbed serve is gone") from exc
        for child in children:
            try:
                spec = child.environ().get(SPEC_ENV)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if spec and json.loads(spec).get("role") == service:
                return child.pid
        raise DrillError(f"no running process of {service!r} (restarting?)")

    def public(self) -> str:
        return public_role(self.topology)

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.proc is not None:
            self.group.stop(self.proc)
