"""Everything one drill starts, as a context manager: the database (SQLite file, or the
drill's own PostgreSQL cluster with a replica when the drill fails it over), the broker,
the TCP proxies of latency faults and the back office. Leaving the block, normally, on an
error, on Ctrl-C or on SIGTERM (turned into KeyboardInterrupt while the block runs), stops
all of it; an ``atexit`` hook does the same if the interpreter exits another way, and every
server gets SIGKILL from the kernel if the drill itself is killed (see
:meth:`drills.procs.ProcessGroup.spawn`)."""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from drills.backoffice import BackOffice, Secrets
from drills.broker import BrokerServer
from drills.faults import Fault
from drills.postgres import PgCluster
from drills.procs import ProcessGroup, free_port_block, wait_port


@dataclass(frozen=True)
class EnvConfig:
    """What to start."""

    topology: str
    db: str  # "postgresql" or "sqlite"
    broker: str  # "redis" or "nats"
    replication: str  # "sync" or "async" (used when a fault needs the replica)
    faults: tuple[Fault, ...]
    rpc_policy: Path | None = None
    replica_lag_ms: float = 0.0  # added to the replica's WAL stream (db-failover drills)


RMTREE_TRIES = 10


class Proxy:
    """A :mod:`drills.proxy` process in front of one internal service."""

    def __init__(self, group: ProcessGroup, root: Path, service: str, target: int,
                 direction: str = "up") -> None:
        self.service, self.target = service, target
        self.port = free_port_block(1, avoid=[target])
        self.control = root / f"latency-{service}.ms"
        self.control.write_text("0")
        self.proc = group.spawn(f"proxy-{service}", [
            sys.executable, "-m", "drills.proxy", "--listen", str(self.port),
            "--target", str(target), "--control", str(self.control), "--direction", direction])
        wait_port(self.port, self.proc, what=f"proxy of {service}")

    def set_delay(self, ms: float) -> None:
        self.control.write_text(repr(float(ms)))
        self.proc.send_signal(signal.SIGUSR1)


class Environment:
    """``with Environment(cfg) as env:`` — ``env.office.url`` answers inside the block."""

    def __init__(self, cfg: EnvConfig, keep: Path | None = None) -> None:
        self.cfg = cfg
        self.root = Path(tempfile.mkdtemp(prefix="testbed-drill-"))
        self.root.chmod(0o711)  # the postgres user reaches its own directory inside
        self.keep = keep  # copy the servers' logs here at the end
        (self.root / "logs").mkdir()
        self.group = ProcessGroup(self.root / "logs")
        self.pg: PgCluster | None = None
        self.sqlite_path: Path | None = None
        self.broker: BrokerServer | None = None
        self.proxies: dict[str, Proxy] = {}  # in front of internal services (latency)
        self.replication_proxy: Proxy | None = None  # on the replica's WAL stream
        self.office: BackOffice | None = None
        self.creds = Secrets.write(self.root)
        self._closed = False
        self._old_term: object = None

    @property
    def db_url(self) -> str:
        if self.pg is not None:
            return self.pg.url
        assert self.sqlite_path is not None
        return f"sqlite:///{self.sqlite_path}"

    def __enter__(self) -> Environment:
        atexit.register(self.close)
        self._old_term = signal.signal(signal.SIGTERM, _interrupt)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        cfg = self.cfg
        if cfg.db == "postgresql":
            failover = any(f.kind == "db-failover" for f in cfg.faults)
            self.pg = PgCluster(self.group, self.root / "pg",
                                cfg.replication if failover else None)
            via = None
            if failover and cfg.replica_lag_ms > 0:  # the WAL stream through a slow proxy
                lag = self.replication_proxy = Proxy(self.group, self.root, "replication",
                                                     self.pg.primary.port, direction="down")
                lag.set_delay(cfg.replica_lag_ms)
                via = lag.port
            self.pg.start(stream_via=via)
        else:
            self.sqlite_path = self.root / "wallet.db"
        if cfg.topology != "monolith":
            self.broker = BrokerServer(self.group, self.root / "broker", cfg.broker)
            self.broker.start()
        office = BackOffice(self.group, cfg.topology, self.db_url,
                            self.broker.url if self.broker else "", self.creds,
                            rpc_policy=cfg.rpc_policy)
        for service in sorted({f.service for f in cfg.faults if f.kind == "latency"}):
            self.proxies[service] = Proxy(self.group, self.root, service,
                                          office.internal_ports[service])
        office.proxied = {s: p.port for s, p in self.proxies.items()}
        self.office = office
        office.start()

    def close(self) -> None:
        """Stop everything (idempotent); copy the logs when asked; remove the directory."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.office is not None:
                self.office.stop()
            self.group.stop_all()
        finally:
            if self.keep is not None:
                shutil.copytree(self.root / "logs", self.keep, dirs_exist_ok=True)
            for _ in range(RMTREE_TRIES):  # a server's last files may still be landing
                shutil.rmtree(self.root, ignore_errors=True)
                if not self.root.exists():
                    break
                time.sleep(0.2)
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)  # type: ignore[arg-type]
            atexit.unregister(self.close)

    def ledger_verify(self) -> subprocess.CompletedProcess[str]:
        """``testbed ledger verify`` on the drill's database (a process of its own)."""
        return subprocess.run([sys.executable, "-m", "testbed", "ledger", "verify", "--db",
                               self.db_url, "--json"], capture_output=True, text=True,
                              timeout=300)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
