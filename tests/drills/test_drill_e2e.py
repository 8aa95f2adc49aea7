"""`testbed drill` end to end, in CI's short form: real processes, real PostgreSQL, Redis,
faults injected under open-loop load; every drill ends with the ledger checked (audit ok,
`testbed ledger verify` exit 0, no acknowledged write lost) and leaves nothing running."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import sim

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _processes_of(workdir: str) -> list[int]:
    """Live processes with the drill's directory on their command line (its PostgreSQL,
    broker, proxies, testbed serve) or in their environment (the services, whose spec
    names the drill's credentials file)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            env = " ".join(p.environ().values())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            env = ""
        if workdir in " ".join(p.info["cmdline"] or []) or workdir in env:
            out.append(p.pid)
    return out


def _drill(out: Path, *args: str) -> sim.Results:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TESTBED_CREDENTIALS", None)
    proc = subprocess.run([sys.executable, "-m", "testbed", "drill", "--out", str(out),
                           "--players", "20", "--window", "2", *args],
                          capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    print(proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = sim.load_results(str(out))
    workdir = res.meta["drill"]["workdir"]
    assert "testbed-drill-" in workdir
    assert _processes_of(workdir) == []  # nothing outlives the drill
    assert not Path(workdir).exists()
    assert res.meta["source"] == "measurement"
    led = res.meta["drill"]["ledger"]
    assert led["audit_ok"] and led["ledger_verify_exit"] == 0, led
    assert led["acknowledged"] > 0 and led["lost"] == 0, led
    assert not res.meta["drill"]["errors"]
    assert (out / "report.md").is_file() and (out / "drill_timeline.png").is_file()
    overall = res.recovery[res.recovery["operation"] == "all"]
    assert len(overall) == len([a for a in args if a == "--fault"])
    assert {"bet", "win"} <= set(res.recovery["operation"])  # each against its own target
    return res


def test_monolith_sqlite_kill(tmp_path: Path) -> None:
    res = _drill(tmp_path, "--topology", "monolith", "--db", "sqlite",
                 "--fault", "kill:monolith@3", "--duration", "10", "--rate", "40")
    row = res.recovery.iloc[0]
    assert row["operation"] == "all"
    assert row["failed"] + row["timed_out"] > 0  # the kill was seen by the generator
    assert math.isfinite(row["resume_s"])  # and success came back
    assert row["end_s"] > row["start_s"]  # ended when /health answered again
    assert res.meta["drill"]["monolith_restarts_by_drill"] == 1
    assert "Fault drill" in (tmp_path / "report.md").read_text()


def test_microservices_sync_failover_loses_nothing(tmp_path: Path) -> None:
    res = _drill(tmp_path, "--topology", "microservices", "--db", "postgresql",
                 "--fault", "db-failover@3", "--replication", "sync", "--duration", "14",
                 "--rate", "30")
    events = res.meta["drill"]["events"]
    assert any("promoted" in e["detail"] for e in events)
    assert math.isfinite(res.recovery.iloc[0]["resume_s"])


def test_hybrid_broker_down_and_database_restart(tmp_path: Path) -> None:
    """Two faults in one drill; the database the injector restarted must outlive the window
    (it was killed with the injector's thread, and the ledger checks could not read it)."""
    res = _drill(tmp_path, "--topology", "hybrid", "--db", "postgresql",
                 "--fault", "broker-down@2+2", "--fault", "db-restart@3+2",
                 "--duration", "10", "--rate", "30")
    events = [(e["fault"], e["action"]) for e in res.meta["drill"]["events"]]
    assert events == [("broker-down@2+2", "start"), ("db-restart@3+2", "start"),
                      ("broker-down@2+2", "end"), ("db-restart@3+2", "end")]
