"""The drill's own PostgreSQL: a primary (and a streaming replica when a drill needs one)
in a temporary directory owned by ``postgres`` (we run as root; the server refuses root),
on free ports, unix sockets in that directory.

Reconnection after a failover: the services get a libpq multi-host URL
(``postgresql://postgres@127.0.0.1:P1,127.0.0.1:P2/postgres?target_session_attrs=read-write``),
which asyncpg understands: each new connection tries the hosts in turn and keeps the one
that accepts writes. The storage layer's pool drops a connection that broke and opens a
new one on the next demand, so once the replica is promoted, new connections land on it;
no proxy sits in the data path and nothing in the back office knows about drills.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import time
from pathlib import Path

import psutil

from drills.procs import DrillError, ProcessGroup, free_port_block, run, wait_port

PG_USER = "postgres"
REPLICA_NAME = "drill_replica"
SETTINGS = {
    "listen_addresses": "127.0.0.1", "max_connections": "300", "fsync": "off",
    "shared_buffers": "64MB", "wal_level": "replica", "max_wal_senders": "4",
    "hot_standby": "on", "logging_collector": "off", "wal_keep_size": "256MB",
}
"""fsync off: the drills kill processes, not the machine, so committed data stays in the
kernel's page cache; a kill -9 of the server loses no more with fsync off than with it on."""


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program (the newest installed major version)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        raise DrillError(f"PostgreSQL server program {name!r} not found under "
                         "/usr/lib/postgresql/*/bin (apt-get install postgresql)")
    return found[-1]


class PgNode:
    """One PostgreSQL server of the drill."""

    def __init__(self, group: ProcessGroup, root: Path, name: str, port: int,
                 options: dict[str, str]) -> None:
        self.group, self.name, self.port = group, name, port
        self.data = root / name
        self.sockets = root
        self.options = {**SETTINGS, "port": str(port), "unix_socket_directories": str(root),
                        **options}
        self.proc = None

    def start(self) -> None:
        """Start the server (foreground ``postgres`` process of the drill's group)."""
        args = [a for k, v in self.options.items() for a in ("-c", f"{k}={v}")]
        self.proc = self.group.spawn(f"pg-{self.name}", [pg_bin("postgres"), "-D",
                                                          str(self.data), *args], user=PG_USER,
                                     stop_signal=signal.SIGINT)  # fast shutdown: no waiting
                                                                 # for clients to leave
        wait_port(self.port, self.proc, what=f"PostgreSQL {self.name}")
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                run([pg_bin("pg_isready"), "-h", str(self.sockets), "-p", str(self.port),
                     "-U", PG_USER], "pg_isready", user=PG_USER, timeout_s=5)
                return
            except DrillError:
                time.sleep(0.1)
        raise DrillError(f"PostgreSQL {self.name} not ready within 60 s")

    def postmaster_pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def crash(self) -> None:
        """kill -9 the server and every backend (a machine or process crash)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        try:
            family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(family, timeout=10)
        if self.proc is not None:
            self.proc.wait(timeout=10)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def restart_after(self, down_s: float) -> None:
        """Crash, stay down ``down_s``, start again on the same port (crash recovery)."""
        self.crash()
        time.sleep(down_s)
        self.start()

    def promote(self) -> None:
        """Make a standby the primary; returns once it accepts writes."""
        run([pg_bin("pg_ctl"), "promote", "-w", "-t", "60", "-D", str(self.data)],
            f"promote {self.name}", user=PG_USER)

    def psql(self, sql: str) -> str:
        """Run ``sql`` on this server; its tab-separated output."""
        return run(["psql", "-h", str(self.sockets), "-p", str(self.port), "-U", PG_USER,
                    "-At", "-c", sql], f"psql on {self.name}", user=PG_USER)


class PgCluster:
    """The primary, and the replica when ``replica`` is "sync" or "async"."""

    def __init__(self, group: ProcessGroup, root: Path, replica: str | None = None) -> None:
        if replica not in (None, "sync", "async"):
            raise ValueError("replica: None, 'sync' or 'async'")
        self.group, self.root, self.replica_mode = group, root, replica
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, PG_USER, PG_USER)
        os.chmod(root, 0o700)
        base = free_port_block(2)
        sync = {"synchronous_standby_names": REPLICA_NAME, "synchronous_commit": "on"} \
            if replica == "sync" else {"synchronous_standby_names": ""}
        self.primary = PgNode(group, root, "primary", base, sync)
        # the replica never waits for a standby of its own once promoted
        self.replica = PgNode(group, root, "replica", base + 1,
                              {"synchronous_standby_names": ""}) if replica else None

    @property
    def url(self) -> str:
        """The services' database URL (multi-host with a replica: see module docstring)."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        tail = "?target_session_attrs=read-write" if self.replica else ""
        return f"postgresql://{PG_USER}@{hosts}/postgres{tail}"

    @property
    def nodes(self) -> list[PgNode]:
        return [self.primary] + ([self.replica] if self.replica else [])

    def start(self, stream_via: int | None = None) -> None:
        """initdb, start the primary; base backup, start and attach the replica (its WAL
        stream through 127.0.0.1:``stream_via`` when given: a proxy that delays it)."""
        run([pg_bin("initdb"), "-D", str(self.primary.data), "-A", "trust", "-U", PG_USER,
             "--no-sync"], "initdb", user=PG_USER)
        self.primary.start()
        if self.replica is None:
            return
        run([pg_bin("pg_basebackup"), "-D", str(self.replica.data), "-h",
             str(self.root), "-p", str(self.primary.port), "-U", PG_USER, "-R",
             "-X", "stream", "--no-sync"], "pg_basebackup", user=PG_USER)
        with open(self.replica.data / "postgresql.auto.conf", "a") as conf:
            where = f"host=127.0.0.1 port={stream_via}" if stream_via else \
                f"host={self.root} port={self.primary.port}"
            conf.write(f"primary_conninfo = '{where} user={PG_USER} "
                       f"application_name={REPLICA_NAME}'\n")
        self.replica.start()
        self._wait_streaming()

    def _wait_streaming(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.primary.psql(
                "SELECT state || ' ' || sync_state FROM pg_stat_replication "
                f"WHERE application_name = '{REPLICA_NAME}'").strip()
            want = "streaming sync" if self.replica_mode == "sync" else "streaming"
            if state.startswith(want):
                return
            time.sleep(0.1)
        raise DrillError("the replica did not start streaming within 60 s")

    def failover(self) -> tuple[str, float]:
        """Crash the primary and promote the replica; the replication lag just before and
        the ``perf_counter`` time of the crash."""
        if self.replica is None:
            raise DrillError("db-failover needs the replica (started with --replication)")
        try:
            lag = self.primary.psql(
                "SELECT coalesce(replay_lag::text, '0') || ' replay lag, ' || "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) || ' bytes behind' "
                f"FROM pg_stat_replication WHERE application_name = '{REPLICA_NAME}'").strip()
        except DrillError:
            lag = "lag unknown"
        crashed = time.perf_counter()
        self.primary.crash()
        self.replica.promote()
        return lag, crashed

    def current_primary(self) -> PgNode:
        """The node that takes writes now."""
        for node in reversed(self.nodes):
            if node.postmaster_pid() is not None and node.psql(
                    "SELECT NOT pg_is_in_recovery()").strip() == "t":
                return node
        raise DrillError("no PostgreSQL node accepts writes")
