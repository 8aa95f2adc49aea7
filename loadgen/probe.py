"""CPU accounting of the processes under test and of the generator itself (psutil).

The back office is found from the target's port: the process listening on it, climbed up to
the ``testbed serve`` that started it (a supervisor in microservices/hybrid, uvicorn's
parent with ``--workers``), and every descendant. Only on this machine (a loopback target);
elsewhere the run says the server's CPU was not measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import psutil

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SATURATED_CPU = 0.9
"""A generator process using more than this share of one core is saturated."""
SATURATED_LAG_MS = 10.0
"""An open-loop run whose p99 send lag (actual minus intended) exceeds this is saturated."""


def server_processes(port: int) -> list[psutil.Process]:
    """The back office's processes serving ``port`` (empty when none is found)."""
    listeners = []
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            listeners.append(c.pid)
    if not listeners:
        return []
    try:
        root = psutil.Process(min(listeners))
        while True:
            parent = root.parent()
            if parent is None or not _is_server(parent):
                break
            root = parent
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _is_server(p: psutil.Process) -> bool:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return False
    return "serve" in cmd and any("testbed" in part for part in cmd)


def database_processes(dbname: str) -> list[psutil.Process]:
    """PostgreSQL backends serving database ``dbname`` on this machine (their command line
    reads ``postgres: ... <user> <dbname> <client> <state>``); shared background processes
    (checkpointer, WAL writer) are left out."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        words = " ".join(p.info.get("cmdline") or []).split()
        if words and words[0] == "postgres:" and dbname in words[1:4]:
            out.append(p)
    return out


def names_from_health(body: object) -> dict[int, str]:
    """pid -> service name from the public ``GET /health`` of a multi-process deployment
    (``{"pid": .., "services": {name: {"pid": ..}}}``); empty for the monolith."""
    if not isinstance(body, dict):
        return {}
    out = {}
    for name, svc in (body.get("services") or {}).items():
        if isinstance(svc, dict) and isinstance(svc.get("pid"), int):
            out[svc["pid"]] = str(name)
    if out and isinstance(body.get("pid"), int):
        out[body["pid"]] = "public"
    return out


def _label(p: psutil.Process, names: dict[int, str]) -> str:
    if p.pid in names:
        return f"{names[p.pid]}:{p.pid}"
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return f"pid:{p.pid}"
    if "serve" in cmd:
        return f"serve:{p.pid}"
    return f"{p.name()}:{p.pid}"


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
    except psutil.Error:
        return math.nan
    return t.user + t.system


@dataclass
class CpuWatch:
    """CPU seconds each watched process spent between :meth:`start` and :meth:`stop`."""

    processes: list[psutil.Process]
    names: dict[int, str] = field(default_factory=dict)
    _start: dict[int, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._start = {p.pid: _cpu(p) for p in self.processes}

    def stop(self) -> dict[str, float]:
        self.used = {_label(p, self.names): _cpu(p) - self._start[p.pid] for p in self.processes}
        return self.used

    def stations(self, architecture: str, wall_s: float) -> pd.DataFrame:
        """One ``cpu`` station per process: utilisation = CPU seconds / wall seconds (a
        share of one core; threads can take a process above 1)."""
        rows = [{"architecture": architecture, "station": name, "kind": "cpu", "servers": 1,
                 "utilisation": used / wall_s, "utilisation_ci": math.nan,
                 "mean_queue": math.nan, "mean_queue_ci": math.nan,
                 "mean_wait_ms": math.nan, "mean_wait_ms_ci": math.nan}
                for name, used in self.used.items()]
        return pd.DataFrame(rows)


def saturation(cpu_share: list[float], p99_lag_ms: float | None) -> list[str]:
    """Why the generator was saturated (empty when it was not)."""
    reasons = []
    worst = max(cpu_share, default=0.0)
    if worst > SATURATED_CPU:
        reasons.append(f"a generator process used {worst:.0%} of a core "
                       f"(bound {SATURATED_CPU:.0%})")
    if p99_lag_ms is not None and p99_lag_ms > SATURATED_LAG_MS:
        reasons.append(f"p99 send lag {p99_lag_ms:.1f} ms above the {SATURATED_LAG_MS:g} ms "
                       "bound (requests left later than intended)")
    return reasons
