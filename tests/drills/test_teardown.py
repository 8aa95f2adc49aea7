"""Nothing a drill starts outlives it: SIGTERM (the drill's context manager unwinds) and
kill -9 of the drill itself (the kernel's parent-death signal) both leave no process and
no listening port behind. Real PostgreSQL, Redis and `testbed serve` (hybrid)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from drills.procs import port_free

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys, time
from drills.environment import EnvConfig, Environment
from drills.faults import parse_fault
f = parse_fault("latency:edge->fraud@1+1:5", topology="hybrid", db="postgresql", duration_s=9)
with Environment(EnvConfig("hybrid", "postgresql", "redis", "sync", (f,))) as env:
    pids = sorted(env.group.pids())
    ports = [env.office.port, *env.office.internal_ports.values(), env.broker.port,
             env.pg.primary.port, env.proxies["fraud"].port]
    print(json.dumps({"pids": pids, "ports": ports, "root": str(env.root)}), flush=True)
    time.sleep(600)
"""


def _start() -> tuple[subprocess.Popen[str], dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the environment did not start (exit {proc.wait(5)})"
    return proc, json.loads(line)


def _gone(info: dict, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in info["pids"] if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        busy = [p for p in info["ports"] if not port_free(p)]
        if not alive and not busy:
            break
        time.sleep(0.2)
    assert not alive, f"processes left: {alive}"
    assert not busy, f"ports still held: {busy}"
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if info["root"] in " ".join(p.info["cmdline"] or [])]
    assert not left, f"processes of the drill's directory left: {left}"


def test_sigterm_stops_everything() -> None:
    proc, info = _start()
    assert len(info["pids"]) >= 6  # postgres, redis, proxy, serve and its 3 services
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    _gone(info)
    assert not Path(info["root"]).exists()


def test_kill_9_of_the_drill_leaves_nothing() -> None:
    proc, info = _start()
    proc.kill()
    proc.wait(10)
    _gone(info)
    shutil.rmtree(info["root"], ignore_errors=True)  # no one was left to remove it
