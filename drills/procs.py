"""Processes and ports of a drill: every process in its own session, every one recorded
in a :class:`ProcessGroup` that stops them all (SIGCONT, SIGTERM, then SIGKILL of whatever
is left, descendants included) when the drill ends, whichever way it ends."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from drills.limits import STARTUP_TIMEOUT_S, STOP_GRACE_S
from reference_impl.deployments.supervisor import death_signal_hook

PORT_LOW, PORT_HIGH = 20_000, 32_000
"""Where the drill's ports are looked for: below the kernel's ephemeral range, so no
client connection of the drill can hold a port a server of the drill restarts on."""


class DrillError(RuntimeError):
    """The drill's environment failed (a server did not start, a command failed)."""


def port_free(port: int) -> bool:
    """Nobody listens on 127.0.0.1:``port`` and it can be bound now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int, avoid: Sequence[int] = ()) -> int:
    """First of ``n`` consecutive free ports."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(PORT_LOW, PORT_HIGH - n)
        ports = range(base, base + n)
        if not set(ports) & set(avoid) and all(port_free(p) for p in ports):
            return base
    raise DrillError(f"no {n} consecutive free ports")


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None,
              timeout_s: float = STARTUP_TIMEOUT_S, what: str = "server") -> None:
    """Until 127.0.0.1:``port`` accepts connections; DrillError if ``proc`` dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DrillError(f"{what} exited with {proc.returncode} before listening on "
                             f"port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise DrillError(f"{what} did not listen on port {port} within {timeout_s:g} s")


def run(cmd: Sequence[str], what: str, user: str | None = None,
        timeout_s: float = STARTUP_TIMEOUT_S) -> str:
    """Run a short command to its end (as ``user`` when given); its output, DrillError on
    failure."""
    full = ["runuser", "-u", user, "--", *cmd] if user else list(cmd)
    try:
        out = subprocess.run(full, capture_output=True, text=True, timeout=timeout_s,
                             start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise DrillError(f"{what}: no answer within {timeout_s:g} s") from exc
    if out.returncode != 0:
        raise DrillError(f"{what} failed ({out.returncode}): {out.stderr.strip()[-800:]}")
    return out.stdout


class ProcessGroup:
    """Every process a drill starts; :meth:`stop_all` ends each one and its descendants."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.extra_pids: set[int] = set()  # processes found later (descendants, servers)
        self.stop_signals: dict[int, int] = {}  # pid -> the signal that stops it cleanly

    def spawn(self, name: str, cmd: Sequence[str], user: str | None = None,
              env: dict[str, str] | None = None,
              stop_signal: int = signal.SIGTERM) -> subprocess.Popen[bytes]:
        """Start ``cmd`` (as ``user``) in its own session, output to ``log_dir/name.log``.
        The kernel SIGKILLs it if the thread that started it dies (PR_SET_PDEATHSIG): even a
        ``kill -9`` of the drill leaves no server behind, so call this from the main thread
        or from a thread that lives as long as the drill."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        ids = {"user": user, "group": user, "extra_groups": []} if user else {}
        try:
            proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=env, preexec_fn=death_signal_hook(),
                                    **ids)
        finally:
            log.close()
        self.procs.append((name, proc))
        self.stop_signals[proc.pid] = stop_signal
        return proc

    def adopt(self, pids: set[int]) -> None:
        """Processes this drill is responsible for, started by its children."""
        self.extra_pids |= pids

    def pids(self) -> set[int]:
        """Every live process of the drill, descendants included."""
        roots = {p.pid for _, p in self.procs if p.poll() is None} | self.extra_pids
        out: set[int] = set()
        for pid in roots:
            try:
                proc = psutil.Process(pid)
                out.add(pid)
                out |= {c.pid for c in proc.children(recursive=True)}
            except psutil.NoSuchProcess:
                continue
        return out

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
        """Its stop signal to ``proc`` (SIGTERM unless spawned with another; SIGCONT first:
        a stopped process acts on nothing); SIGKILL it and its descendants after
        ``grace_s``."""
        try:
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            _signal(p.pid, signal.SIGCONT)
        _signal(proc.pid, self.stop_signals.get(proc.pid, signal.SIGTERM))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        for p in family:
            _signal(p.pid, signal.SIGKILL)
        proc.poll()

    def stop_all(self) -> None:
        """End everything, last started first; then SIGKILL any survivor."""
        left = self.pids()
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                self.stop(proc)
        for pid in left | self.pids():
            _signal(pid, signal.SIGCONT)
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_GRACE_S
        for pid in left:
            while psutil.pid_exists(pid) and time.monotonic() < deadline:
                try:
                    if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                        break
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.02)
        for _, proc in self.procs:
            proc.poll()


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
