"""Closed-loop runs (locust ``FastHttpUser``), driven from the ``testbed`` process.

Starts :mod:`loadgen.locust_main` as a child process (locust must not monkey-patch this
one), times the server's CPU accounting on its ``MEASURE_START``/``MEASURE_STOP`` lines and
merges the users' measurements it returns.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from loadgen.openloop import LoadError
from loadgen.probe import CpuWatch
from loadgen.record import Recorder, merge

if TYPE_CHECKING:
    from loadgen.run import Plan

RUN_MARGIN_S = 180.0
"""Beyond the duration, how long the locust process may take (start-up, set-up, report)."""


@dataclass(frozen=True)
class ClosedConfig:
    users: int
    workers: int
    shape: bool
    spawn_rate: float


@dataclass
class ClosedOutcome:
    recorder: Recorder
    generator: dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _plan_json(plan: Plan, cfg: ClosedConfig, plan_path: Path) -> bytes:
    c = plan.credentials
    creds = None if c is None else {
        "provider_id": c.provider_id,
        "provider_secret": c.provider_secret.decode() if c.provider_secret else None,
        "operator_token": c.operator_token, "staff_token": c.staff_token,
    }
    return orjson.dumps({
        "scenario": plan.scenario.model_dump(mode="json", by_alias=True),
        "scenario_name": plan.scenario.name, "target": plan.target,
        "duration_s": plan.duration_s, "seed": plan.seed, "prefix": plan.prefix,
        "credentials": creds, "users": cfg.users, "workers": cfg.workers, "shape": cfg.shape,
        "spawn_rate": cfg.spawn_rate, "master_port": _free_port(),
        "plan_path": str(plan_path),
    })


def run_locust(plan: Plan, cfg: ClosedConfig, watch: CpuWatch | None) -> ClosedOutcome:
    """Run the users; their merged measurements and the generator's CPU figures."""
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        plan_path, out_path = Path(tmp) / "plan.json", Path(tmp) / "out.pickle"
        os.chmod(tmp, 0o700)  # the plan may hold credentials
        plan_path.write_bytes(_plan_json(plan, cfg, plan_path))
        log_path = Path(tmp) / "locust.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "loadgen.locust_main", "--plan", str(plan_path),
                 "--out", str(out_path)], stdout=subprocess.PIPE, stderr=log)
            assert proc.stdout is not None
            try:
                for raw in proc.stdout:
                    line = raw.decode(errors="replace").strip()
                    if line == "MEASURE_START" and watch is not None:
                        watch.start()
                    elif line == "MEASURE_STOP" and watch is not None:
                        watch.stop()
                proc.wait(timeout=plan.duration_s + RUN_MARGIN_S)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if proc.returncode != 0 or not out_path.is_file():
            tail = log_path.read_text(errors="replace")[-3000:]
            raise LoadError(f"locust run failed (exit {proc.returncode}):\n{tail}")
        out = pickle.loads(out_path.read_bytes())
    reports = out["reports"]
    if len(reports) < max(1, out["workers_expected"]):
        raise LoadError(f"only {len(reports)} of {out['workers_expected']} locust workers "
                        "reported their measurements")
    rec = merge([r["recorder"] for r in reports])
    cpu_s = sum(r["cpu_s"] for r in reports)
    if cfg.workers:
        cpu_s += out["master_cpu_s"]
    requests = sum(h.get_total_count() for h in rec.total.values())
    generator = {
        "locust_processes": len(reports),
        "cpu_s": round(cpu_s, 3),
        "cpu_share": [r["cpu_s"] / r["wall_s"] for r in reports],
        "max_cpu_share_of_a_core": round(max(r["cpu_s"] / r["wall_s"] for r in reports), 3),
        "requests_per_cpu_s": round(requests / cpu_s, 1) if cpu_s else None,
    }
    return ClosedOutcome(rec, generator)
