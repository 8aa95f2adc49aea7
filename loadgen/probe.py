"""CPU accounting of the processes under test and of the generator itself (psutil).

The back office is found from the target's port: the process listening on it, climbed up to
the ``testbed serve`` that started it (a supervisor in microservices/hybrid, uvicorn's
parent with ``--workers``), and every descendant. Only on this machine (a loopback target);
elsewhere the run says the server's CPU was not measured.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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


SHARED_PREFIX = "database"
"""Label of watched processes that belong to a shared server (PostgreSQL backends): their
scheduling (another nice level, other clients) does not say what the back office got."""
RUNQUEUE_PERIOD_S = 0.05
"""How often the run queue is sampled during a watched window."""
PROC_STAT = Path("/proc/stat")


def runnable() -> float:
    """Threads running or ready to run on this machine now (Linux ``procs_running``; else the
    one-minute load average)."""
    try:
        for line in PROC_STAT.read_text().splitlines():
            if line.startswith("procs_running "):
                return float(line.split()[1])
    except OSError:
        pass
    return float(psutil.getloadavg()[0])


class RunQueue:
    """Mean of :func:`runnable` over a window, and the steal at each sample (the most stolen
    within any :data:`BURST_WINDOW_S`: :meth:`steal_burst`), sampled by a daemon thread."""

    def __init__(self) -> None:
        self._samples: list[float] = []
        self._steal: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._samples, self._steal, self._stop = [], [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RUNQUEUE_PERIOD_S):
            self._samples.append(runnable() - 1.0)  # not counting this sampler
            self._steal.append((time.monotonic(), host_steal()))

    def steal_burst(self) -> float:
        """Most CPU seconds the hypervisor took within any :data:`BURST_WINDOW_S` of the
        window (0 with fewer than two samples)."""
        return steal_burst(self._steal)

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return max(0.0, sum(self._samples) / len(self._samples)) if self._samples else math.nan


BURST_WINDOW_S = 1.0
"""Window of :func:`steal_burst`: a vCPU descheduled for 360 ms stalls every request on it
for as long, yet adds only 0.018 cores to a 20 s window's mean steal."""


def steal_burst(samples: list[tuple[float, float]], window: float = BURST_WINDOW_S) -> float:
    """Most steal (seconds) between two samples ``(time, steal since boot)`` at most
    ``window`` apart."""
    best, j = 0.0, 0
    for i in range(len(samples)):
        while samples[i][0] - samples[j][0] > window + 1e-9:
            j += 1
        best = max(best, samples[i][1] - samples[j][1])
    return best


def host_steal() -> float:
    """CPU seconds the hypervisor has given this machine's virtual cores to others since boot
    (Linux ``steal``; 0 on bare metal)."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def host_busy() -> float:
    """CPU seconds this machine has spent busy since boot, all cores (not idle, not iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)


SPARE_BUSY = 0.9
"""A machine busy on average below this share of its cores had spare cores: what the other
processes used is what they wanted (:meth:`CpuWatch.besides`)."""


def _waited(p: psutil.Process) -> float:
    """Seconds the process's main thread has waited for a core (Linux schedstat), or 0."""
    try:
        return int(Path(f"/proc/{p.pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class CpuWatch:
    """CPU seconds each watched process spent between :meth:`start` and :meth:`stop`."""

    processes: list[psutil.Process]
    names: dict[int, str] = field(default_factory=dict)
    _start: dict[int, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    host_busy_s: float = math.nan
    """CPU seconds the whole machine spent (every process, every core) in the window."""
    runnable: float = math.nan
    """Mean threads running or waiting for a core in the window (every process)."""
    waited: dict[str, float] = field(default_factory=dict)
    """Seconds each watched process waited for a core in the window (ready, not running)."""
    steal_s: float = math.nan
    """CPU seconds the hypervisor took from this machine's cores in the window (included in
    ``host_busy_s``): a neighbour's load the machine cannot see, which slows everything."""
    steal_burst_s: float = math.nan
    """The most it took within any :data:`BURST_WINDOW_S` of the window."""
    _host_start: float = math.nan
    _steal_start: float = math.nan
    _queue: RunQueue = field(default_factory=RunQueue)
    _wait_start: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        self._start = {p.pid: _cpu(p) for p in self.processes}
        self._wait_start = {p.pid: _waited(p) for p in self.processes}
        self._host_start = host_busy()
        self._steal_start = host_steal()
        self._queue.start()

    def stop(self) -> dict[str, float]:
        self.runnable = self._queue.stop()
        self.steal_burst_s = self._queue.steal_burst()
        self.used = {_label(p, self.names): _cpu(p) - self._start[p.pid] for p in self.processes}
        self.waited = {_label(p, self.names): _waited(p) - self._wait_start[p.pid]
                       for p in self.processes}
        self.host_busy_s = host_busy() - self._host_start
        self.steal_s = host_steal() - self._steal_start
        return self.used

    def steal(self, wall_s: float) -> tuple[float, float]:
        """The window's steal: mean cores and the most seconds within a second (NaN when
        not read)."""
        cores = self.steal_s / wall_s if wall_s > 0 else math.nan
        return cores, self.steal_burst_s

    def cpu_now(self) -> float:
        """CPU seconds the watched processes have used so far, all together (NaN when none
        can be read)."""
        total = [c for c in (_cpu(p) for p in self.processes) if math.isfinite(c)]
        return sum(total) if total else math.nan

    def besides(self, wall_s: float) -> float:
        """Cores wanted by everything but the watched processes (the load generator
        included). While the machine had idle cores (busy below :data:`SPARE_BUSY` of
        them), the others got all they wanted: their use, the machine's busy CPU less the
        watched processes' (a shared database's other clients count as others). On a
        saturated machine use says nothing of demand; then, in processor-sharing terms:
        the watched processes got a share ``s`` of a core while they wanted one (CPU over
        CPU plus time ready but waiting, Linux schedstat; the shared database's backends,
        labelled :data:`SHARED_PREFIX`, are left out), and on ``h`` cores one process
        sharing fairly with ``b`` others gets ``h / (1 + b)``, so ``b = h / s - 1``.
        Measured: that formula alone read a quiet machine as 1.2-2.3 cores of background,
        since a process that sleeps and wakes waits for a core at every wake-up (and the
        five of microservices wait for each other), which made the host model slow the
        back office that had the machine to itself. Without either: the mean run queue
        less the watched processes' CPU."""
        cores = psutil.cpu_count() or 1
        if math.isfinite(self.host_busy_s) and wall_s > 0 \
                and self.host_busy_s / wall_s < SPARE_BUSY * cores:
            watched = sum(self.used.values())
            return max(0.0, (self.host_busy_s - watched) / wall_s)
        own = [k for k in self.used if not k.startswith(SHARED_PREFIX)]
        used = sum(self.used[k] for k in own)
        waited = sum(self.waited.get(k, 0.0) for k in own)
        if waited > 0 and used > 0:
            return max(0.0, cores * (used + waited) / used - 1.0)
        if waited == 0 and used > 0 and self.waited:
            return 0.0
        return max(0.0, self.runnable - used / wall_s)

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
