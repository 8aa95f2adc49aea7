"""Faults at their times: a thread that waits for each action's moment (counted from the
start of the measured window), does it, and notes when it actually happened. The thread
lives until the drill ends, because a server it restarts (database, broker) is killed by
the kernel when the thread that started it exits (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass

import httpx

from drills.environment import Environment
from drills.faults import Fault
from drills.postgres import PgNode
from drills.procs import DrillError

PID_RETRY_S = 10.0
"""How long a kill or hang waits for its service's process (restarting) to exist."""
SQLITE_LOCK_TIMEOUT_S = 30.0
INSTANT = ("kill", "db-failover")
"""Faults whose trigger ends when the back office answers again, not at a given time."""
READY_GRACE_S = 0.2
READY_POLL_S = 0.05
READY_WAIT_S = 60.0


@dataclass(frozen=True)
class Event:
    """What the injector did, ``t_s`` from the window's start."""

    fault: str
    action: str
    t_s: float
    detail: str = ""


class Injector:
    """Run the actions of ``faults`` against ``env`` from :meth:`start` on."""

    def __init__(self, env: Environment, faults: list[Fault]) -> None:
        self.env, self.faults = env, faults
        self.events: list[Event] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0
        self._stopped_pids: dict[str, int] = {}
        self._sqlite: sqlite3.Connection | None = None
        self._down_node: PgNode | None = None
        self._struck: float | None = None  # when an action's fault really began

    def start(self) -> None:
        """The measured window starts now."""
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="drill-faults", daemon=True)
        self._thread.start()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def stop(self) -> None:
        """End the thread (after undoing a hang or a lock still in force)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        for pid in self._stopped_pids.values():
            _cont(pid)
        if self._sqlite is not None:
            self._sqlite.close()

    def _run(self) -> None:
        actions = sorted([(f.at_s, 0, f, "start") for f in self.faults]
                         + [(f.end_s, 1, f, "end") for f in self.faults if f.duration_s],
                         key=lambda a: (a[0], a[1]))
        for at, _, fault, phase in actions:
            if self._stop.wait(max(0.0, at - self.now())):
                return
            began = round(self.now(), 3)  # the action's moment, however long it takes
            self._struck = None
            try:
                detail = self._do(fault, phase)
                if self._struck is not None:  # the blow came after a preparation
                    began = round(self._struck - self.t0, 3)
            except (DrillError, OSError, sqlite3.Error) as exc:
                self.errors.append(f"{fault.text} {phase}: {exc}")
                detail = f"FAILED: {exc}"
            self.events.append(Event(fault.text, phase, began, detail))
            if fault.kind in INSTANT and not self._stop.is_set():
                self._wait_ready()
                self.events.append(Event(fault.text, "ready", round(self.now(), 3),
                                         "/health 200"))
        self._stop.wait()

    def _wait_ready(self) -> None:
        """Until the back office answers ``/health`` 200 again after an instant fault."""
        assert self.env.office is not None
        self._stop.wait(READY_GRACE_S)  # the supervisor notices a death within 0.1 s
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                if httpx.get(f"{self.env.office.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self._stop.wait(READY_POLL_S)

    def _pid(self, service: str) -> int:
        assert self.env.office is not None
        deadline = time.monotonic() + PID_RETRY_S
        while True:
            try:
                return self.env.office.pid_of(service)
            except DrillError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _do(self, f: Fault, phase: str) -> str:
        env = self.env
        if f.kind == "kill":
            pid = self._pid(f.service)
            os.kill(pid, signal.SIGKILL)
            return f"SIGKILL pid {pid}"
        if f.kind == "hang":
            if phase == "start":
                pid = self._stopped_pids[f.text] = self._pid(f.service)
                os.kill(pid, signal.SIGSTOP)
                return f"SIGSTOP pid {pid}"
            pid = self._stopped_pids.pop(f.text)
            _cont(pid)
            return f"SIGCONT pid {pid}"
        if f.kind == "latency":
            env.proxies[f.service].set_delay(f.delay_ms if phase == "start" else 0.0)
            return f"+{f.delay_ms:g} ms" if phase == "start" else "delay off"
        if f.kind == "broker-down":
            assert env.broker is not None
            if phase == "start":
                env.broker.stop()
                return "broker stopped"
            env.broker.start()
            return "broker started"
        if f.kind == "db-failover":
            assert env.pg is not None
            lag, crashed = env.pg.failover()
            self._struck = crashed
            return (f"primary killed at {crashed - self.t0:.3f} s ({env.pg.replica_mode} "
                    f"replication; just before: {lag or 'no standby'}), replica promoted "
                    f"{time.perf_counter() - crashed:.2f} s later")
        if f.kind == "db-restart":
            return self._db_restart(phase)
        raise DrillError(f"unknown fault kind {f.kind}")

    def _db_restart(self, phase: str) -> str:
        env = self.env
        if env.pg is not None:
            if phase == "start":
                node = self._down_node = env.pg.current_primary()
                node.crash()
                return f"PostgreSQL {node.name} killed"
            node, self._down_node = self._down_node, None
            assert node is not None
            node.start()
            return f"PostgreSQL {node.name} started (crash recovery)"
        # SQLite has no server: the database "goes away" as an exclusive lock another
        # process holds on the file (every write waits, then fails), and "comes back" when
        # the lock is released.
        assert env.sqlite_path is not None
        if phase == "start":
            self._sqlite = sqlite3.connect(env.sqlite_path, timeout=SQLITE_LOCK_TIMEOUT_S,
                                           isolation_level=None, check_same_thread=False)
            self._sqlite.execute("BEGIN EXCLUSIVE")
            return "SQLite file locked exclusively"
        assert self._sqlite is not None
        self._sqlite.execute("ROLLBACK")
        self._sqlite.close()
        self._sqlite = None
        return "SQLite lock released"


def _cont(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
