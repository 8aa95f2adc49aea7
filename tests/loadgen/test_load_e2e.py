"""`testbed load` against a real `testbed serve` (SQLite), started here on a free port and
stopped after: open loop at a target rate, closed loop (locust, local and with workers), and
a one-second SIGSTOP of the server that the open loop sees and the closed loop hides."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hdrh.histogram import HdrHistogram

import sim
from loadgen.locust_run import ClosedConfig, run_locust
from loadgen.openloop import Hooks, OpenLoopConfig, run_open_loop
from loadgen.record import HIGHEST_US, LOWEST_US, Recorder, merge
from loadgen.run import Plan
from sim.model.scenario import load_scenario
from tests.reference_impl.http_server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_PATH = ROOT / "scenarios" / "baseline_day.yaml"
PAUSE_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("load") / "wallet.db"
    # closed-loop users without think time are one player each sending as fast as the server
    # answers (~1,000/s on a quiet machine): above the edge's per-player bucket (200/s), which
    # would answer 429 RATE_LIMITED. This server is the generator's target, not the guard's test.
    srv = Server(db=f"sqlite:///{db}", topology="monolith",
                 extra_args=("--rate-per-player", "1000000"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _load(server: Server, out: Path, *args: str) -> sim.Results:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TESTBED_CREDENTIALS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "testbed", "load", str(SCENARIO_PATH), "--target", server.url,
         "--out", str(out), "--players", "50", *args],
        capture_output=True, text=True, timeout=300, env=env)
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.md").is_file() and (out / "throughput_p99.png").is_file()
    return sim.load_results(str(out))


def test_open_loop_reaches_its_rate_and_writes_the_results_schema(server: Server,
                                                                   tmp_path: Path) -> None:
    creds = tmp_path / "creds.yaml"  # signed requests; the server runs open and ignores them
    creds.write_text(f'providers: [{{id: p, secret: "{"s" * 40}"}}]\n'
                     f'operators: [{{id: o, token: "{"t" * 40}"}}]\n')
    res = _load(server, tmp_path / "out", "--rate", "300", "--duration", "6",
                "--credentials", str(creds), "--lead-in", "2")  # 2 s sent, not measured
    m = res.meta
    assert m["source"] == "measurement" and m["mode"] == "open"
    assert m["achieved_rate_rps"] == pytest.approx(300, rel=0.05)
    assert res.summary["requests"].sum() == pytest.approx(1800, rel=0.05)
    assert set(res.summary["operation"]) >= {"bet", "win", "balance", "deposit"}
    assert (res.summary["error_rate"] == 0).all(), m["errors_by_code"]
    assert res.summary[["p50_ms", "p99_ms", "p999_ms"]].notna().all().all()
    assert res.timeseries["t_s"].max() == 5.0
    assert m["server_cpu_s"] and m["generator"]["cpu_s"] > 0
    assert "generator_saturated" in m


def test_lead_in_is_an_open_loop_option() -> None:
    from click.testing import CliRunner

    from testbed.cli import cli

    res = CliRunner().invoke(cli, ["load", str(SCENARIO_PATH), "--users", "3", "--lead-in", "2",
                                   "--out", "x"])
    assert res.exit_code == 2 and "--lead-in is an open-loop option" in res.output
    res = CliRunner().invoke(cli, ["load", str(SCENARIO_PATH), "--rate", "3", "--lead-in", "-1",
                                   "--out", "x"])
    assert res.exit_code == 2 and "--lead-in" in res.output


@pytest.mark.parametrize("workers", [0, 2])
def test_closed_loop_users(server: Server, tmp_path: Path, workers: int) -> None:
    res = _load(server, tmp_path, "--users", "10", "--workers", str(workers),
                "--duration", "5")
    m = res.meta
    assert m["mode"] == "closed" and m["users"] == 10
    assert m["generator"]["locust_processes"] == max(1, workers)
    assert res.summary["requests"].sum() > 100
    assert (res.summary["error_rate"] == 0).all(), m["errors_by_code"]
    assert set(res.summary["operation"]) >= {"bet", "win", "balance"}


def _p99_ms(rec: Recorder) -> float:
    whole = HdrHistogram(LOWEST_US, HIGHEST_US, 3)
    for h in rec.total.values():
        whole.add(h)
    return float(whole.get_value_at_percentile(99)) / 1000


class _PauseServer:
    """Stops the server (SIGSTOP) ``after_s`` into the measured window for PAUSE_S."""

    def __init__(self, pid: int, after_s: float) -> None:
        self.pid, self.after_s = pid, after_s
        self.timer: threading.Timer | None = None

    def _pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        try:
            threading.Event().wait(PAUSE_S)
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def start(self) -> None:
        self.timer = threading.Timer(self.after_s, self._pause)
        self.timer.start()

    def stop(self) -> None:
        assert self.timer is not None
        self.timer.join()


def test_a_one_second_pause_shows_in_the_open_loop_p99_only(server: Server) -> None:
    assert server.proc is not None
    sc = load_scenario(SCENARIO_PATH)
    pause = _PauseServer(server.proc.pid, after_s=3.0)
    cfg = OpenLoopConfig(server.url, rate=200, duration_s=8, players=50, seed=7,
                         prefix="pause-o-")
    parts = run_open_loop(sc, cfg, 1, Hooks(pause.start, pause.stop))
    open_p99 = _p99_ms(merge([p["recorder"] for p in parts]))

    pause = _PauseServer(server.proc.pid, after_s=3.0)
    plan = Plan(sc, server.url, "127.0.0.1", server.port, 8.0, 50, 7, None, "m", "pause-c-")
    out = run_locust(plan, ClosedConfig(users=4, workers=0, shape=False, spawn_rate=4.0),
                     pause)  # type: ignore[arg-type]  # duck-typed start/stop
    closed_p99 = _p99_ms(out.recorder)
    print(f"\n1 s SIGSTOP: open-loop p99 {open_p99:.1f} ms, closed-loop p99 {closed_p99:.1f} ms")
    assert open_p99 >= 0.6 * PAUSE_S * 1000  # requests due during the pause waited for it
    assert closed_p99 < 0.5 * open_p99       # 4 users: 4 stalled requests hide in the p99


def test_a_lead_in_is_sent_but_not_measured(server: Server) -> None:
    # the server is stopped for a second inside the lead-in: the window that follows must
    # not see it (nor count the lead-in's requests), and the CPU hooks bracket the window
    assert server.proc is not None
    sc = load_scenario(SCENARIO_PATH)
    pause = _PauseServer(server.proc.pid, after_s=1.0)  # 50 players' set-up takes < 0.5 s
    started: list[float] = []

    def start_pause() -> None:
        started.append(time.perf_counter())

    cfg = OpenLoopConfig(server.url, rate=200, duration_s=3, players=50, seed=9,
                         prefix="lead-", lead_in_s=3.0)
    t_run = time.perf_counter()
    pause.start()
    part = run_open_loop(sc, cfg, 1, Hooks(start_pause, lambda: None))[0]
    pause.stop()
    rec = merge([part["recorder"]])
    n = sum(h.get_total_count() for h in rec.total.values())
    assert started and started[0] - t_run >= 3.0
    assert 400 <= n <= 800, n  # 3 s at 200/s, not 6
    assert _p99_ms(rec) < 0.3 * PAUSE_S * 1000
    with pytest.raises(ValueError, match="lead-in"):
        OpenLoopConfig(server.url, rate=1, duration_s=1, players=1, seed=1, prefix="x",
                       lead_in_s=float("nan"))


def test_calibrate_writes_a_valid_scenario_with_measured_demands(server: Server,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "cal.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "testbed", "calibrate", "--target", server.url,
         "--topology", "monolith", "--out", str(out), "--rates", "40", "--seconds", "1.5",
         "--mix-rates", "40,120", "--mix-seconds", "1.5", "--refine", "0", "--players", "20",
         "--reference-seconds", "0", "--fit-rounds", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    sc = load_scenario(out)
    assert out.read_text().startswith("# Calibrated")
    assert [d.kind for d in sc.deployments] == ["monolith"]
    for op in ("bet", "win", "balance"):
        step = next(s for s in sc.operations[op].steps if s.cpu is not None)
        demand = sc.demand(step.cpu)
        assert demand is not None and demand.mean_s() > 0, op
        wait = next(s for s in sc.operations[op].steps if s.external is not None)
        assert [lv.rps for lv in sc.demand(wait.external).levels] == [40.0, 120.0]  # type: ignore[union-attr]
    assert "off-CPU fit round 0" in out.read_text()
    assert "off-CPU fit round 1" in out.read_text()  # --fit-rounds 1
    assert "off-CPU fit round 2" not in out.read_text()
    levels = json.loads(out.with_suffix(".levels.json").read_text())
    assert [m["reference_rps"] for m in levels["mixes"]] == [0.0, 0.0]  # --reference-seconds 0


def test_a_reference_window_reads_the_back_offices_cpu_per_request(server: Server) -> None:
    """The machine's speed as the back office sees it (calibrate's before each mix level,
    validate's before each level): its processes' CPU per answered request, on this server."""
    from loadgen.run import Plan
    from loadgen.validate import reference

    plan = Plan(load_scenario(SCENARIO_PATH), server.url, "127.0.0.1", server.port, 1.0, 20,
                1, None, "monolith", "refw-")
    got = reference(plan, 60.0, "t", 1.0)
    assert 0.05 < got.cpu_ms < 100.0, got  # ms of CPU per request, not seconds nor NaN
    assert 0.05 < got.p50_ms < 1000.0, got  # ms from the intended send time


def test_the_run_ends_once_the_last_answer_is_in(server: Server) -> None:
    """Regression: the drain waited its full 10 s whenever the last answer came before the
    window's end (it only looked for answers after the end)."""
    for seed in (3, 4, 5):  # the old code waited in most runs (two of these three)
        cfg = OpenLoopConfig(server.url, rate=50, duration_s=1.0, players=5, seed=seed,
                             prefix=f"drain{seed}-")
        part = run_open_loop(load_scenario(SCENARIO_PATH), cfg)[0]
        assert part["wall_s"] < 5.0, part["wall_s"]
        assert part["sent"] > 0


def test_shape_replays_the_scenarios_spike_in_compressed_time(server: Server,
                                                               tmp_path: Path) -> None:
    # a 60 s window whose middle third is a 4x spike, replayed in 9 s with at most 8 users
    # thinking 50 ms: users (and so throughput) go about 2 -> 8 -> 2 over the run
    raw = yaml.safe_load(SCENARIO_PATH.read_text())
    raw["simulation"]["duration_s"] = 60
    raw["simulation"]["closed"] = {"users": 8,
                                   "think_time": {"kind": "constant", "value_ms": 50}}
    raw["population"]["spikes"] = [{"name": "goal", "start_s": 20, "duration_s": 20,
                                    "multiplier": 4}]
    scenario = tmp_path / "spiky.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TESTBED_CREDENTIALS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "testbed", "load", str(scenario), "--target", server.url,
         "--out", str(out), "--players", "50", "--users", "8", "--shape", "--duration", "9"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    res = sim.load_results(str(out))
    assert res.meta["mode"] == "closed"
    per_s = res.timeseries.groupby("t_s")["requests"].sum().sort_index()
    first, middle = per_s.iloc[1:3].mean(), per_s.iloc[4:6].mean()
    print(per_s.to_dict())
    assert middle > 2.0 * first
