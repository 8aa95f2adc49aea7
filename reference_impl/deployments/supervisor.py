"""The parent of a multi-process deployment: starts the children stage by stage, waits for
each to answer /health, restarts one that dies (and says so), stops them all on Ctrl-C/SIGTERM.

Children run in their own session (Ctrl-C reaches the supervisor only, which stops the public
process first) and get SIGKILL from the kernel if the supervisor dies (PR_SET_PDEATHSIG on
Linux), so killing the supervisor with ``kill -9`` kills the whole deployment: no orphans.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

import httpx

from reference_impl.deployments.spec import SPEC_ENV, ChildSpec

PR_SET_PDEATHSIG = 1
RESTART_WINDOW_S = 30.0
RESTARTS_BEFORE_BACKOFF = 3
BACKOFF_S = 2.0


def death_signal_hook() -> Callable[[], None] | None:
    """A preexec hook asking the kernel to SIGKILL the child when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


@dataclass
class Child:
    """One supervised process."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)
    not_before: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.role


class Supervisor:
    """Run ``stages`` (lists of children started together; later stages after the earlier
    ones are healthy) until stopped."""

    def __init__(
        self, stages: list[list[ChildSpec]], *, restart: bool = True,
        startup_timeout_s: float = 60.0, log: TextIO | None = None,
    ) -> None:
        self.stages = [[Child(spec) for spec in stage] for stage in stages]
        self.restart, self.startup_timeout_s = restart, startup_timeout_s
        self.log = log or sys.stderr
        self._stopping = False
        self._hook = death_signal_hook()

    @property
    def children(self) -> list[Child]:
        """All children, in start order."""
        return [c for stage in self.stages for c in stage]

    def say(self, message: str) -> None:
        """One line on the supervisor's log."""
        print(f"[testbed serve] {message}", file=self.log, flush=True)

    def request_stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """Signal handler: stop at the next turn of the loop."""
        self._stopping = True

    def run(self) -> int:
        """Start, supervise, stop; 0 after a requested stop, 1 when startup failed."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)
        try:
            if not self._start_all():
                return 1
            self.say("ready: " + ", ".join(
                f"{c.name} {c.spec.url} (pid {c.proc.pid if c.proc else '-'})"
                for c in self.children))
            while not self._stopping:
                self._check_children()
                time.sleep(0.1)
            return 0
        finally:
            self._stop_all()

    def _spawn(self, child: Child) -> subprocess.Popen[bytes]:
        env = {**os.environ, SPEC_ENV: child.spec.to_json()}
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "reference_impl.deployments.service_main"],
            env=env, start_new_session=True, preexec_fn=self._hook,
        )
        return child.proc

    def _start_all(self) -> bool:
        for stage in self.stages:
            for child in stage:
                self._spawn(child)
            deadline = time.monotonic() + self.startup_timeout_s
            waiting = list(stage)
            while waiting:
                if self._stopping:
                    return False
                for child in list(waiting):
                    assert child.proc is not None
                    code = child.proc.poll()
                    if code is not None:
                        self.say(f"{child.name} exited with {code} during startup")
                        return False
                    if _healthy(child.spec.url):
                        waiting.remove(child)
                if time.monotonic() > deadline:
                    self.say("not healthy in time: " + ", ".join(c.name for c in waiting))
                    return False
                time.sleep(0.05)
        return True

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if now >= child.not_before and not self._stopping:
                    proc = self._spawn(child)
                    self.say(f"{child.name} restarted (pid {proc.pid})")
                continue
            code = child.proc.poll()
            if code is None:
                continue
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            self.say(f"{child.name} (pid {child.proc.pid}) died with {how}")
            child.proc = None
            if not self.restart:
                self._stopping = True
                continue
            while child.restarts and now - child.restarts[0] > RESTART_WINDOW_S:
                child.restarts.popleft()
            child.restarts.append(now)
            if len(child.restarts) > RESTARTS_BEFORE_BACKOFF:
                child.not_before = now + BACKOFF_S

    def _stop_all(self) -> None:
        """SIGTERM stage by stage, public process first; SIGKILL what outlives the grace."""
        for stage in reversed(self.stages):
            live = [c.proc for c in stage if c.proc is not None and c.proc.poll() is None]
            for proc in live:
                proc.terminate()
            for proc in live:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.say("stopped")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False
