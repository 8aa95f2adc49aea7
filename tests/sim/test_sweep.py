"""Sweeps: the grid, Dask execution (LocalCluster and a separately started scheduler and worker
give the same table), the capacity answer on an analytically known threshold, the report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from sim import load_sweep
from sim.model.scenario import ScenarioError
from sim.reports.sweep_report import knee_index, write_sweep_report
from sim.sweep import parse_vary, run_sweep
from sim.sweep.execute import Bundle, plan_bundles
from sim.sweep.grid import build_grid, point_scenarios

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "scenarios" / "baseline_day.yaml"
# 4 wallet replica counts, moved together in the three deployments (their wallet hosts)
WALLET = ("deployments.monolith.services.app.replicas+deployments.microservices.services.wallet"
          ".replicas+deployments.hybrid.services.core.replicas=2,4,6,8")
SMALL = ["population.peak_online=20000", "simulation.duration_s=3", "simulation.replications=2"]

# ------------------------------------------------------------------ grid (no cluster)


def test_vary_parses_linked_paths_and_yaml_values() -> None:
    d = parse_vary("a.b+c.d=1, 2.5,x")
    assert d.paths == ("a.b", "c.d") and d.values == (1, 2.5, "x")
    pts = build_grid([d, parse_vary("population.peak_online=10,20")])
    assert len(pts) == 6 and pts[1].values == {"a.b+c.d": 1, "population.peak_online": 20}
    assert pts[1].overrides == ("a.b=1", "c.d=1", "population.peak_online=20")
    assert parse_vary("population.peak_online=1,2").is_load and not d.is_load


@pytest.mark.parametrize(("text", "reason"), [
    ("no_equals", "expected PATH=V1,V2"), ("a.b=", "comma-separated"), ("a.b=1,,2", "comma"),
    ("a.b=1,1", "distinct"), ("=1,2", "empty field path"),
])
def test_bad_vary_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ScenarioError, match=reason):
        parse_vary(text)


def test_every_point_is_validated_before_running() -> None:
    pts = build_grid([parse_vary("deployments.monolith.services.app.replicas=4,0")])
    with pytest.raises(ScenarioError) as err:
        point_scenarios(BASELINE, [], pts)
    assert "sweep point 1" in str(err.value) and "replicas" in str(err.value)
    pts = build_grid([parse_vary("deployments.nope.services.app.replicas=4")])
    with pytest.raises(ScenarioError, match="no list item named 'nope'"):
        point_scenarios(BASELINE, [], pts)


def test_replications_are_bundled_into_tasks_of_a_second_or_more() -> None:
    pts = build_grid([parse_vary("population.peak_online=2000,200000")])
    scens = point_scenarios(BASELINE, ["simulation.duration_s=5"], pts)
    bundles = plan_bundles(scens, 6)
    small = [b for b in bundles if b.point == 0]
    assert small == [Bundle(0, (0, 1, 2, 3, 4, 5))]  # ~100 requests a replication: one task
    big = [b for b in bundles if b.point == 1]
    assert [r for b in big for r in b.replications] == list(range(6)) and len(big) > 1


def test_knee_is_the_edge_of_the_flat_region() -> None:
    assert knee_index([5.0, 5.2, 5.5, 30.0, 400.0]) == 2      # load sweep: last flat point
    assert knee_index([900.0, 40.0, 6.0, 5.0]) == 2           # replica sweep: first flat point
    assert knee_index([5.0, 5.1, 5.2]) is None
    assert knee_index([float("nan"), 3.0]) is None


# ------------------------------------------------------------------ on Dask


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    from sim.sweep.execute import dask_client

    with dask_client(None, 2) as c:
        yield c


def _threshold_scenario(tmp_path: Path) -> Path:
    """250 requests/s of 10 ms on single-core single-worker replicas behind round robin:
    rho = 2.5 / replicas, so 1 or 2 replicas saturate (the queue grows without bound) and
    3 is the smallest count that keeps up."""
    path = tmp_path / "threshold.yaml"
    path.write_text("""
name: threshold
simulation: {duration_s: 20, replications: 2, warmup: 0, seed: 3}
population:
  registered_players: 100000
  peak_online: 2500
  online_curve: [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]
  session: {actions_per_minute: 6}
demands:
  work: {kind: constant, value_ms: 10}
operations:
  bet: {weight: 1, steps: [{component: wallet, cpu: work}]}
deployments:
  - name: mono
    kind: monolith
    services: [{name: app, components: [wallet], replicas: 1, cores: 1, workers: 1}]
slos:
  latency_ms: {bet: {p99: 200}}
""")
    return path


@pytest.mark.e2e
def test_capacity_answer_names_the_analytic_threshold(client: object, tmp_path: Path) -> None:
    path = _threshold_scenario(tmp_path)
    sweep = run_sweep(path, [parse_vary("deployments.mono.services.app.replicas=1,2,3,4")],
                      client=client)
    answer = sweep.meta["capacity"]["smallest_meeting"]
    assert answer == [{"architecture": "mono", "point": 2, "cores": 3, "connections": 0,
                       "configuration": "deployments.mono.services.app.replicas=3"}]
    util = sweep.table[sweep.table["metric"] == "busiest_utilisation"].set_index("point")
    assert util.loc[2, "value"] == pytest.approx(2.5 / 3, rel=0.05)
    # the load at which 3 replicas break: rho 0.67 and 0.83 keep up, 1.17 does not
    load = run_sweep(path, [parse_vary("population.peak_online=2000,2500,3500")],
                     ["deployments.mono.services.app.replicas=3"], client=client)
    brk = load.meta["capacity"]["breaking_load"]
    assert [(b["architecture"], b["breaks_at"]) for b in brk] == [("mono", 3500)]
    assert "bet p99_ms missed" in brk[0]["failing"]
    report = write_sweep_report(load.table, load.meta, tmp_path / "rep")
    text = report.read_text()
    assert "first failing load" in text and "3,500" in text
    assert (tmp_path / "rep" / "sweep_0.png").stat().st_size > 10_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> set[int]:
    """Child processes, except multiprocessing's resource tracker (it lives as long as this
    process, started by the first process pool, and exits with it)."""
    return {c.pid for c in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(c.cmdline())}


def _stop(procs: list[subprocess.Popen]) -> None:
    tree = [psutil.Process(p.pid) for p in procs if p.poll() is None]
    tree += [c for p in list(tree) for c in p.children(recursive=True)]
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    _gone, alive = psutil.wait_procs(tree, timeout=20)
    for p in alive:
        p.kill()
    assert not alive, f"left running: {alive}"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.heavy
def test_local_cluster_and_separate_scheduler_give_the_same_table(tmp_path: Path) -> None:
    before = _children()
    local = run_sweep(BASELINE, [parse_vary(WALLET)], SMALL, workers=2)
    assert _children() <= before, "the LocalCluster left processes running"
    t = local.table
    assert sorted(set(t["architecture"])) == ["hybrid", "microservices", "monolith"]
    assert t["point"].nunique() == 4 and t[WALLET.split("=")[0]].tolist()[0] == 2
    cores = t.groupby(["point", "architecture"])["cores"].first().unstack()
    assert cores.loc[0, "monolith"] == 2 * 4 + 64 and cores.loc[3, "monolith"] == 8 * 4 + 64

    port = _free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    addr = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", addr,
                                       "--no-nanny", "--nthreads", "1", "--no-dashboard",
                                       "--host", "127.0.0.1"], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = tmp_path / "remote"
        sets = [a for s in SMALL for a in ("--set", s)]
        cli = subprocess.run([sys.executable, "-m", "testbed", "sweep", str(BASELINE),
                              "--vary", WALLET, *sets, "--scheduler", addr, "--out", str(out),
                              "--no-progress"], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
        assert cli.returncode == 0, cli.stderr[-3000:]
    finally:
        _stop(procs)
    remote = load_sweep(out)
    assert remote.attrs["meta"]["cluster"] == addr
    pd.testing.assert_frame_equal(local.table, remote)
    assert "Capacity answer" in (out / "sweep.md").read_text()
    assert "smallest configuration" in cli.stdout.lower()


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from testbed.cli import cli

    monkeypatch.setattr("sim.sweep.execute.CONNECT_TIMEOUT_S", 2)
    res = CliRunner().invoke(cli, ["sweep", str(BASELINE), "--vary",
                                    "population.peak_online=1000,2000", "--scheduler",
                                    f"tcp://127.0.0.1:{_free_port()}", "--out",
                                    str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "cannot reach the Dask scheduler" in res.output


def test_readme_documents_one_valid_sweep_per_shipped_scenario() -> None:
    import shlex

    text = (ROOT / "README.md").read_text()
    cmds = [shlex.split(line) for line in text.splitlines()
            if line.startswith("testbed sweep scenarios/")]
    shipped = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))
    assert sorted({Path(c[2]).name for c in cmds}) == shipped
    for c in cmds:
        dims = [parse_vary(c[i + 1]) for i, a in enumerate(c) if a == "--vary"]
        assert point_scenarios(ROOT / c[2], [], build_grid(dims))


@pytest.mark.parametrize(("vary", "message"), [
    ("deployments.monolith.services.app.replicas=4,-1",
     "sweep point 1 (deployments.monolith.services.app.replicas=-1)"),
    ("simulation.duration_s=.nan,5", "simulation.duration_s: Input should be a finite number"),
    ("nothing", "expected PATH=V1,V2"),
])
def test_bad_sweep_exits_2_naming_the_point_and_field(tmp_path: Path, vary: str,
                                                      message: str) -> None:
    from click.testing import CliRunner

    from testbed.cli import cli

    res = CliRunner().invoke(cli, ["sweep", str(BASELINE), "--vary", vary,
                                   "--out", str(tmp_path / "x")])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "x").exists()


def _synthetic(rows: list[tuple[int, int, str, int, str]]) -> pd.DataFrame:
    """(point, replicas, architecture, cores, verdict) -> a minimal sweep table."""
    return pd.DataFrame([{"point": p, "r": r, "architecture": a, "operation": "bet",
                          "metric": "p99_ms", "value": 1.0, "ci": 0.1, "lower": 0.9,
                          "upper": 1.1, "target": 50.0, "verdict": v, "station": "",
                          "cores": c, "connections": 2 * c, "replications": 2}
                         for p, r, a, c, v in rows])


def test_capacity_picks_fewest_cores_and_says_when_nothing_meets() -> None:
    from sim.sweep.capacity import breaking_loads, smallest_meeting

    dim = parse_vary("r=1,2,3")
    table = _synthetic([(0, 1, "a", 10, "missed"), (0, 1, "b", 5, "uncertain"),
                        (1, 2, "a", 20, "met"), (1, 2, "b", 9, "missed"),
                        (2, 3, "a", 20, "met"), (2, 3, "b", 14, "missed")])
    ans = smallest_meeting(table, [dim]).set_index("architecture")
    assert ans.loc["a", "point"] == 1 and ans.loc["a", "configuration"] == "r=2"  # tie: earlier
    assert ans.loc["a", "connections"] == 40
    assert ans.loc["b", "configuration"] == "none in the grid meets every SLO"
    assert breaking_loads(table, [dim]).empty  # r is not a load
    load = parse_vary("population.peak_online=3,1,2")  # unsorted values: sorted by load
    t2 = table.rename(columns={"r": "population.peak_online"})
    t2["population.peak_online"] = t2["population.peak_online"].map({1: 3, 2: 1, 3: 2})
    brk = breaking_loads(t2, [load]).set_index("architecture")
    assert brk.loc["a", "breaks_at"] == 3 and "bet p99_ms missed" in brk.loc["a", "failing"]
    assert brk.loc["b", "breaks_at"] == 1


def test_load_sweep_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no sweep\.parquet"):
        load_sweep(tmp_path)
