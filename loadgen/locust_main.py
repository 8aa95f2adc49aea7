# ruff: noqa: I001  (locust is imported first, before anything gevent must patch)
"""The locust side of closed-loop runs, in its own process (``python -m loadgen.locust_main``).

Locust monkey-patches the standard library with gevent when imported, so it never runs in
the ``testbed`` process (whose asyncio/uvloop open-loop generator and httpx must stay
unpatched): :mod:`loadgen.locust_run` starts this module with a plan file, reads its
``MEASURE_START``/``MEASURE_STOP`` lines to time the server's CPU accounting, and reads the
result file it writes.

Roles: ``local`` (users in this process), ``master`` (locust's ``MasterRunner`` on a
127.0.0.1 port, starting ``--workers`` worker processes of this module) and ``worker``.
Every user process records its own measurements (:class:`loadgen.record.Recorder`, wall
clock) between the master's ``loadgen_measure`` and ``loadgen_report`` messages and sends
them back as a ``loadgen_recorder`` message; the master merges the histograms.
"""

from __future__ import annotations

import locust  # first: gevent monkey-patches the standard library on import
import argparse
import itertools
import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import numpy as np
import orjson
from gevent.event import Event
from locust import FastHttpUser, LoadTestShape, task
from locust.env import Environment

from loadgen.behaviour import MAX_ATTEMPTS, RETRY_STATUSES, Players, Request, error_code
from loadgen.client import CONNECTION_ERROR
from loadgen.record import Recorder
from loadgen.shape import users_at, window_peak
from loadgen.signing import Credentials, Signer
from sim.model.scenario import Scenario, parse_scenario

WORKERS_READY_S = 60.0
"""How long the master waits for its workers to connect."""
REPORT_WAIT_S = 30.0
"""How long the master waits for the workers' measurements after the window."""
NETWORK_TIMEOUT_S = 60.0
THINK_BLOCK = 1024

assert locust.__version__


@dataclass
class _State:
    """What this process measures (set by the master's messages, or directly when local)."""

    recorder: Recorder | None = None
    measuring: bool = False
    cpu0: float = 0.0
    wall0: float = 0.0
    reports: list[dict[str, Any]] = field(default_factory=list)
    got_report: Event = field(default_factory=Event)


STATE = _State()


def load_plan(path: str) -> dict[str, Any]:
    plan: dict[str, Any] = orjson.loads(Path(path).read_bytes())
    return plan


def _credentials(plan: dict[str, Any]) -> Credentials | None:
    c = plan.get("credentials")
    if c is None:
        return None
    secret = c.get("provider_secret")
    return Credentials(c.get("provider_id"), secret.encode() if secret else None,
                       c.get("operator_token"), c.get("staff_token"))


def make_user(plan: dict[str, Any], scenario: Scenario) -> type[FastHttpUser]:
    """A FastHttpUser class playing one player of ``scenario`` per user."""
    signer = Signer(_credentials(plan))
    numbers = itertools.count()
    whales = scenario.population.whales
    closed = scenario.simulation.closed
    think = closed.think_time if closed is not None else None
    prefix = f"{plan['prefix']}{os.getpid()}u"

    class ScenarioPlayer(FastHttpUser):
        host = plan["target"]
        network_timeout = NETWORK_TIMEOUT_S
        connection_timeout = NETWORK_TIMEOUT_S

        def wait_time(self) -> float:
            if think is None:
                return 0.0
            if not self._think:
                self._think = think.sample_s(self._rng, THINK_BLOCK).tolist()
            return float(self._think.pop()) / self._activity

        def on_start(self) -> None:
            k = next(numbers)
            self.players = Players(scenario, 1, f"{prefix}{k}-", plan["seed"] + k)
            self._rng = np.random.default_rng(plan["seed"] + k)
            self._think: list[float] = []
            is_whale = int((k + 1) * whales.share) > int(k * whales.share)
            self._activity = whales.activity_multiplier if is_whale else 1.0
            for chain in self.players.setup_requests():
                for req in chain:
                    self.send(req)

        def send(self, req: Request) -> None:
            started = time.time()
            for attempt in range(1, MAX_ATTEMPTS + 1):
                headers = dict(signer.headers(req.method, req.path, req.body))
                if req.body:
                    headers["Content-Type"] = "application/json"
                with self.client.request(req.method, req.path, data=req.body or None,
                                         headers=headers, name=req.operation,
                                         catch_response=True) as resp:
                    status = resp.status_code or 0
                    body = resp.content or b""
                    code = CONNECTION_ERROR if status == 0 else error_code(status, body)
                    if code is None:
                        resp.success()
                    else:
                        resp.failure(code)
                if attempt < MAX_ATTEMPTS and (status == 0 or status in RETRY_STATUSES):
                    continue  # same Request: same body, same transaction id; signed again
                break
            self.players.answered(req, status)
            rec = STATE.recorder
            if (rec is not None and STATE.measuring and req.operation != "setup"
                    and started >= rec.t0):
                rec.record(req.operation, started, time.time(), code)

        @task
        def act(self) -> None:
            self.send(self.players.next())

    return ScenarioPlayer


class ScenarioShape(LoadTestShape):
    """The scenario's curve over the simulated window, compressed into the run."""

    def __init__(self, scenario: Scenario, run_s: float, peak_users: int, spawn_rate: float):
        super().__init__()
        self.scenario, self.run_s, self.peak_users = scenario, run_s, peak_users
        self.spawn_rate = spawn_rate
        self.peak = window_peak(scenario)

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.run_s:
            return None
        return users_at(self.scenario, t, self.run_s, self.peak_users, self.peak), \
            self.spawn_rate


# ----------------------------------------------------------------------- measuring


def start_measuring(t0: float) -> None:
    STATE.recorder = Recorder(t0=t0)
    STATE.cpu0, STATE.wall0 = time.process_time(), time.time()
    STATE.measuring = True


def report() -> dict[str, Any]:
    STATE.measuring = False
    rec = STATE.recorder or Recorder(t0=time.time())
    return {"recorder": rec.export(), "cpu_s": time.process_time() - STATE.cpu0,
            "wall_s": time.time() - STATE.wall0, "pid": os.getpid()}


def _on_measure(environment: Environment, msg: Any, **_: Any) -> None:
    start_measuring(float(msg.data["t0"]))


def _on_report(environment: Environment, msg: Any, **_: Any) -> None:
    assert environment.runner is not None
    environment.runner.send_message("loadgen_recorder", report())


def _on_recorder(environment: Environment, msg: Any, **_: Any) -> None:
    STATE.reports.append(msg.data)
    STATE.got_report.set()


# ----------------------------------------------------------------------- roles


def run_worker(plan: dict[str, Any], master_port: int) -> None:
    scenario = parse_scenario(plan["scenario"], plan["scenario_name"])
    env = Environment(user_classes=[make_user(plan, scenario)], host=plan["target"])
    runner = env.create_worker_runner("127.0.0.1", master_port)
    runner.register_message("loadgen_measure", _on_measure)
    runner.register_message("loadgen_report", _on_report)
    assert runner.greenlet is not None
    runner.greenlet.join()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_driver(plan: dict[str, Any], out: str) -> None:
    scenario = parse_scenario(plan["scenario"], plan["scenario_name"])
    users, workers, duration = plan["users"], plan["workers"], plan["duration_s"]
    spawn_rate = plan["spawn_rate"]
    shape = ScenarioShape(scenario, duration, users, spawn_rate) if plan["shape"] else None
    env = Environment(user_classes=[make_user(plan, scenario)], host=plan["target"],
                      shape_class=shape)
    spawned = Event()
    env.events.spawning_complete.add_listener(lambda user_count, **_: spawned.set())
    procs: list[subprocess.Popen[bytes]] = []
    cpu_parent0 = time.process_time()
    if workers:
        runner = env.create_master_runner("127.0.0.1", plan["master_port"])
        runner.register_message("loadgen_recorder", _on_recorder)
        for _ in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "loadgen.locust_main", "--plan", plan["plan_path"],
                 "--worker", "--master-port", str(plan["master_port"])]))
        deadline = time.monotonic() + WORKERS_READY_S
        while len(runner.clients.ready) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(runner.clients.ready)} of {workers} locust "
                                   "workers connected")
            gevent.sleep(0.1)
    else:
        runner = env.create_local_runner()
    try:
        if shape is not None:
            runner.start_shape()
        else:
            runner.start(users, spawn_rate=spawn_rate)
            spawned.wait(timeout=max(30.0, 2 * users / spawn_rate))
            gevent.sleep(1.0)  # let the last users finish their set-up
        t0 = time.time()
        if workers:
            runner.send_message("loadgen_measure", {"t0": t0})
        else:
            start_measuring(t0)
        _say("MEASURE_START")
        gevent.sleep(duration)
        _say("MEASURE_STOP")
        if workers:
            runner.send_message("loadgen_report")
            deadline = time.monotonic() + REPORT_WAIT_S
            while len(STATE.reports) < workers and time.monotonic() < deadline:
                STATE.got_report.clear()
                STATE.got_report.wait(timeout=1.0)
            reports = list(STATE.reports)
        else:
            reports = [report()]
    finally:
        runner.quit()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    cpu_parent = time.process_time() - cpu_parent0
    Path(out).write_bytes(pickle.dumps({"reports": reports, "workers_expected": workers,
                                        "master_cpu_s": cpu_parent}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m loadgen.locust_main")
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--master-port", type=int)
    a = ap.parse_args(argv)
    plan = load_plan(a.plan)
    if a.worker:
        run_worker(plan, a.master_port)
    else:
        run_driver(plan, a.out)


if __name__ == "__main__":
    main()
