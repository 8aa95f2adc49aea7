"""Faults in the scenario language and the engine (sim/model/faults.py, sim/engine/faults.py):
refused input, each fault kind's effect with a figure, and the fluid check of a hung station."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from sim.analysis.validate import evaluate, fluid_case
from sim.engine.core import Engine
from sim.engine.output import FAILED, OK, TIMED_OUT
from sim.engine.sampling import BatchDraws
from sim.engine.sources import plan_sources
from sim.engine.stations import Pool
from sim.model.scenario import ScenarioError, parse_scenario
from sim.model.topology import compile_topology, reduce_factor, reduce_refusal

RATE = 200.0  # requests/s


def _exp(ms: float) -> dict[str, Any]:
    return {"kind": "exponential", "mean_ms": ms}


def base(kind: str = "microservices", faults: list[dict[str, Any]] | None = None,
         duration: float = 60.0) -> dict[str, Any]:
    """Three operations: login (player), bet (wallet + async fraud), deposit (fraud, wallet)."""
    online = 1000
    raw: dict[str, Any] = {
        "name": "faults",
        "simulation": {"duration_s": duration, "replications": 2, "warmup": 0, "seed": 3},
        "population": {"registered_players": 100_000, "peak_online": online,
                       "online_curve": [1.0] * 24, "whales": {"share": 0.0},
                       "session": {"actions_per_minute": 60.0 * RATE / online}},
        "operations": {
            "login": {"weight": 0.2, "steps": [{"component": "player", "cpu": _exp(1.0)}]},
            "bet": {"weight": 0.6, "steps": [
                {"component": "wallet", "cpu": _exp(1.0), "db": _exp(1.0)},
                {"component": "fraud", "mode": "async", "cpu": _exp(0.5)}]},
            "deposit": {"weight": 0.2, "steps": [
                {"component": "fraud", "cpu": _exp(0.5)},
                {"component": "wallet", "cpu": _exp(1.0), "db": _exp(1.0)}]},
        },
        "slos": {"latency_ms": {"bet": {"p99": 100}, "login": {"p99": 100},
                                "deposit": {"p99": 100}}},
        "faults": faults or [],
    }
    db = [{"name": "main", "cores": 4, "max_connections": 100}]
    if kind == "monolith":
        raw["deployments"] = [{"name": "monolith", "kind": "monolith", "databases": db,
                               "services": [{"name": "app", "replicas": 4, "cores": 2,
                                             "workers": 32, "db_pool": 8, "database": "main",
                                             "components": ["player", "wallet", "fraud"]}]}]
    else:
        raw["deployments"] = [{"name": "micro", "kind": "microservices", "databases": db,
                               "services": [
                                   {"name": "player", "components": ["player"], "replicas": 2},
                                   {"name": "wallet", "components": ["wallet"], "replicas": 2,
                                    "db_pool": 8, "database": "main"},
                                   {"name": "fraud", "components": ["fraud"], "replicas": 2}]}]
    return raw


def run_once(raw: dict[str, Any], seed: int = 5) -> Any:
    scen = parse_scenario(copy.deepcopy(raw))
    topo = compile_topology(scen, scen.deployments[0])
    rng = np.random.default_rng(seed)
    eng = Engine(topo, rng, 1.0, draws=BatchDraws(rng))
    plan = plan_sources(scen, 1, np.random.SeedSequence(seed), 1)
    return eng.run(plan, scen.simulation.duration_s), list(scen.operations)


def errors_in(out: Any, ops: list[str], t0: float, t1: float) -> dict[str, int]:
    sel = (out.t >= t0) & (out.t < t1)
    return {op: int((out.error & sel & (out.op == i)).sum()) for i, op in enumerate(ops)}


# --------------------------------------------------------------------------- language


@pytest.mark.parametrize(("fault", "needle"), [
    ({"kind": "crash", "target": "nowhere", "at_s": 5, "duration_s": 5},
     "faults[0] (crash nowhere).target: no service or component 'nowhere'"),
    ({"kind": "crash", "target": "wallet", "replicas": 3, "at_s": 5, "duration_s": 5},
     "3 replicas named but service 'wallet' has 2"),
    ({"kind": "crash", "target": "wallet", "at_s": 5}, "exactly one of duration_s or until_s"),
    ({"kind": "crash", "target": "wallet", "at_s": 5, "until_s": 4}, "must be after at_s"),
    ({"kind": "crash", "target": "wallet", "at_s": 500, "duration_s": 5}, "not within the run"),
    ({"kind": "crash", "target": "wallet", "at_s": 5, "duration_s": math.inf},
     "faults[0].duration_s: Input should be a finite number"),
    ({"kind": "slowdown", "target": "wallet", "at_s": 5, "duration_s": 5, "factor": 1e9},
     "less than or equal to 1000"),
    ({"kind": "network", "source": "fraud", "target": "wallet", "at_s": 5, "duration_s": 5},
     "latency_ms > 0 or loss > 0"),
    ({"kind": "network", "source": "fraud", "target": "wallet", "at_s": 5, "duration_s": 5,
      "loss": 1.5}, "less than or equal to 1"),
    ({"kind": "db_failover", "target": "other", "at_s": 5, "duration_s": 5},
     "no database 'other'"),
    ({"kind": "meteor", "target": "x", "at_s": 5, "duration_s": 5},
     "faults[0]: Input tag 'meteor'"),
    ({"kind": "crash", "target": "wallet", "at_s": 5, "duration_s": 5, "reconnect":
      {"operation": "nope"}}, "reconnect.operation: no operation 'nope'"),
])
def test_bad_faults_are_refused_with_the_field(fault: dict[str, Any], needle: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(base(faults=[fault]), "f.yaml")
    assert needle in str(err.value) and str(err.value).startswith("f.yaml: ")


def test_component_resolves_per_deployment() -> None:
    """A crash of 'wallet' crashes the monolith's replicas in a monolith."""
    f = [{"kind": "crash", "target": "wallet", "at_s": 5, "duration_s": 5}]
    mono = parse_scenario(base("monolith", f))
    spec = compile_topology(mono, mono.deployments[0]).faults[0]
    assert spec.service == 0 and spec.replicas == (0, 1, 2, 3)
    assert spec.end_s == 5 + 5 + 5.0  # down, then the default boot of 5 s
    net = parse_scenario(base("monolith", [{"kind": "network", "source": "fraud",
                                            "target": "wallet", "at_s": 5, "duration_s": 5,
                                            "loss": 0.5}]))
    assert compile_topology(net, net.deployments[0]).faults[0].inert


def test_reduce_refused_for_a_partial_crash() -> None:
    raw = base("monolith", [{"kind": "crash", "target": "app", "replicas": 1, "at_s": 5,
                             "duration_s": 5}])
    raw["simulation"]["reduce"] = True
    raw["deployments"][0]["databases"][0]["shards"] = 4
    scen = parse_scenario(raw)
    assert "stops 1 replica(s)" in (reduce_refusal(scen) or "")
    assert reduce_factor(scen) == 1
    raw["faults"][0].pop("replicas")
    assert reduce_factor(parse_scenario(raw)) == 4


# --------------------------------------------------------------------------- engine


def test_monolith_replica_crash_hurts_every_operation() -> None:
    """1 of 4 monolith replicas dies at 20 s: every operation errors until the health check
    (2 s checks, 3 failures: out at 26 s) takes it out, none after."""
    out, ops = run_once(base("monolith", [{"kind": "crash", "target": "wallet", "replicas": 1,
                                           "at_s": 20, "duration_s": 10}]))
    during = errors_in(out, ops, 20.0, 26.0)
    assert all(n > 0 for n in during.values()), during
    assert sum(errors_in(out, ops, 0.0, 20.0).values()) == 0
    assert sum(errors_in(out, ops, 26.5, 60.0).values()) == 0
    assert out.faults[0].detected_s == pytest.approx(26.0)
    share = sum(during.values()) / int(((out.t >= 20) & (out.t < 26)).sum())
    assert 0.15 < share < 0.35  # about one request in four went to the dead replica


def test_crash_of_a_service_errors_only_operations_that_reach_it() -> None:
    """All fraud replicas die in microservices: deposit (calls fraud) fails, login never
    touches fraud and bet only publishes to it (async): neither errors. Back at 35 s (10 s
    down, 5 s boot), behind the load balancer after 2 good checks (38 s)."""
    out, ops = run_once(base("microservices", [{"kind": "crash", "target": "fraud",
                                                "at_s": 20, "duration_s": 10}]))
    during = errors_in(out, ops, 20.0, 35.0)
    assert during["deposit"] > 0.9 * RATE * 0.2 * 15 * 0.9, during
    assert during["login"] == 0 and during["bet"] == 0
    assert sum(errors_in(out, ops, 38.0, 60.0).values()) == 0


def test_async_failover_loses_transactions_and_sync_none() -> None:
    """Primary down 20..25 s; 200 ms lag: about 0.2 s of writes (bet and deposit) lost."""
    f = [{"kind": "db_failover", "target": "main", "at_s": 20, "duration_s": 5}]
    raw = base("monolith", f)
    raw["deployments"][0]["databases"][0]["replication_lag_ms"] = 200
    out, ops = run_once(raw)
    lost = out.faults[0].lost_transactions
    writes_per_s = RATE * 0.8
    assert 0.4 * writes_per_s * 0.2 < lost < 2.0 * writes_per_s * 0.2, lost
    assert errors_in(out, ops, 20.0, 25.0)["bet"] > 0
    assert errors_in(out, ops, 20.0, 25.0)["login"] == 0   # no database work
    raw["deployments"][0]["databases"][0]["replication"] = "sync"
    raw["deployments"][0]["databases"][0]["sync_round_trip_ms"] = 5
    out_sync, _ = run_once(raw)
    assert out_sync.faults[0].lost_transactions == 0
    # and every write pays the round trip, in steady state too
    pre = (out.t < 20) & ~out.error & (out.op == 1)
    pre_s = (out_sync.t < 20) & ~out_sync.error & (out_sync.op == 1)
    gap = out_sync.latency[pre_s].mean() - out.latency[pre].mean()
    assert 0.004 < gap < 0.007, gap


def test_hang_queues_instead_of_failing() -> None:
    out, _ = run_once(base("monolith", [{"kind": "hang", "target": "app", "at_s": 20,
                                           "duration_s": 3}]))
    assert not out.error.any()
    at = (out.t >= 20) & (out.t < 20.5)
    assert out.latency[at].min() > 2.0


def test_slow_external_and_network_loss() -> None:
    raw = base("microservices", [
        {"kind": "network", "source": "player", "target": "fraud", "at_s": 10,
         "duration_s": 5, "loss": 1.0, "lost_wait_s": 2},
    ])
    # deposit enters at fraud and calls wallet: a link fraud <-> wallet; enough fraud
    # workers that no deposit waits for one past the window (that cascade is real, see
    # the next figure)
    raw["faults"][0]["source"] = "wallet"
    raw["deployments"][0]["services"][2]["workers"] = 500
    out, ops = run_once(raw)
    dep = out.op == ops.index("deposit")
    sel = dep & (out.t >= 10.5) & (out.t < 14.5)
    assert (out.outcome[sel] == TIMED_OUT).all() and sel.sum() > 50
    assert (out.latency[sel] >= 2.0).all()
    assert (out.outcome[(out.op == ops.index("login"))] == OK).all()
    slow = base("microservices")
    slow["operations"]["deposit"]["steps"].append({"component": "wallet",
                                                   "external": "psp"})
    slow["demands"] = {"psp": {"kind": "constant", "value_ms": 100}}
    slow["faults"] = [{"kind": "slowdown", "target": "psp", "at_s": 10, "duration_s": 10,
                       "factor": 5}]
    out, ops = run_once(slow)
    dep = out.op == ops.index("deposit")
    inside = out.latency[dep & (out.t > 11) & (out.t < 19)].mean()
    outside = out.latency[dep & (out.t > 25)].mean()
    assert 0.38 < inside - outside < 0.43  # 100 ms -> 500 ms


def test_broker_outage_backs_up_then_catches_up() -> None:
    out, _ = run_once(base("monolith", [{"kind": "broker_outage", "at_s": 20,
                                         "duration_s": 10}]))
    assert not out.error.any()
    broker = next(s for s in out.stations if s.kind == "broker")
    q = np.diff(np.concatenate([[0.0], broker.queue]))   # mean backlog per 1 s bin
    assert q[28] > 0.8 * RATE * 0.6 * 8     # bets' fraud messages pile up ...
    assert q[40] < 1.0                      # ... and are consumed after


def test_player_retries_and_reconnect_storm() -> None:
    raw = base("monolith", [{"kind": "crash", "target": "app", "replicas": 2, "at_s": 20,
                             "duration_s": 10}])
    raw["players"] = {"retry": {"max_attempts": 3, "backoff_ms": 200, "jitter": "none"},
                      "reconnect": {"operation": "login", "over_s": 2}}
    out, ops = run_once(raw)
    assert out.attempts is not None and len(out.attempts) == len(out.t)
    during = (out.t >= 20) & (out.t < 26)
    assert out.attempts[during].mean() > 1.2 and out.attempts[out.t < 19].max() == 1
    # half the replicas dead: P(3 misses) ~ 1/8, far fewer failures than attempts failed
    assert out.error[during].mean() < 0.25
    login = out.op == ops.index("login")
    storm = int((login & (out.t >= 35) & (out.t < 37)).sum())
    usual = int((login & (out.t >= 45) & (out.t < 47)).sum())
    assert storm > usual + 0.5 * out.error[(out.t >= 20) & (out.t < 35)].sum()


def test_pool_capacity_hook() -> None:
    import simpy

    env = simpy.Environment()
    p = Pool(env, "w", "workers", 2)
    assert p.acquire() is None and p.acquire() is None
    p.set_capacity(0)
    ev = p.acquire()
    assert ev is not None and not ev.triggered
    p.release()
    p.release()
    assert p.busy == 0 and not ev.triggered
    p.set_capacity(1)
    assert ev.triggered and p.busy == 1
    assert p.fail_waiting() == 0
    w = p.acquire()
    assert p.fail_waiting() == 1 and w.value is not None


def test_outcome_codes_match_the_schema() -> None:
    from sim.reports.results import OUTCOMES

    assert OUTCOMES[OK] == "ok" and OUTCOMES[FAILED] == "failed"


def test_fluid_check() -> None:
    """One M/M/1 station at rho 0.5 hung for 30 s: back lambda D / (mu - lambda) = 30 s after
    the restart, within 10% (the same case runs in ``testbed validate --analytic``)."""
    table = evaluate([fluid_case(0.5, 30.0, 5, 11)], jobs=1)
    row = table.iloc[0]
    assert row["theory"] == pytest.approx(30.0)
    assert row["pass"], table.to_string()
    assert abs(row["rel_error"]) < 0.10


def test_run_report_and_results_carry_recovery(tmp_path) -> None:
    """A run with a fault: the recovery table (saved, loaded), the report's section and plot."""
    from sim.reports.report import write_report
    from sim.reports.results import load_results
    from sim.runner import run

    raw = base("microservices", [{"kind": "crash", "target": "fraud", "at_s": 20,
                                  "duration_s": 5}], duration=70.0)
    res = run(parse_scenario(raw), jobs=1)
    rec = res.recovery
    assert set(rec["operation"]) == {"login", "bet", "deposit"}
    dep = rec.set_index("operation").loc["deposit"]
    login = rec.set_index("operation").loc["login"]
    assert dep["failed"] > 0 and dep["availability_fault"] < 0.5
    assert login["failed"] == 0 and login["availability_fault"] == 1.0
    assert dep["detect_s"] == pytest.approx(6.0)          # checks at 22, 24, 26 s
    assert dep["recovered_share"] == 1.0
    # back behind the load balancer at 34 s, the 10 s error window clear after 44 s
    assert dep["slo_restored_s"] == pytest.approx(25.0, abs=1.0)
    res.save(tmp_path)
    assert load_results(tmp_path).recovery.equals(res.recovery)
    text = write_report(res, tmp_path).read_text()
    assert "## Failure recovery" in text and "failure_recovery.png" in text
    assert (tmp_path / "failure_recovery.png").stat().st_size > 10_000
    assert "window_p99_ms" in res.timeseries.columns
    peaks = res.meta["peak_queue_per_station"]["micro"]["crash fraud"]
    assert "fraud[0].workers" in peaks and all(v >= 0 for v in peaks.values())


@pytest.mark.parametrize(("override", "needle"), [
    ("faults.0.target=nowhere", "faults[0] (crash nowhere).target: no service or component"),
    ("faults.0.at_s=.inf", "faults[0].at_s: Input should be a finite number"),
    ("players.retry.max_attempts=1000", "players.retry.max_attempts: Input should be less"),
])
def test_cli_refuses_a_bad_fault_with_exit_2(override: str, needle: str) -> None:
    from click.testing import CliRunner

    from testbed.cli import cli

    res = CliRunner().invoke(cli, ["simulate", "scenarios/outage_wallet_crash.yaml",
                                   "--set", override, "--no-progress", "--no-report"])
    assert res.exit_code == 2, res.output
    assert "outage_wallet_crash.yaml" in res.output and needle in res.output, res.output
    assert "Traceback" not in res.output


def test_reduced_failover_reproduces_the_full_system() -> None:
    """A failover of the whole database reduces (k = 4): lost transactions and failed
    requests of the partition, scaled by k, match the full system's."""
    f = [{"kind": "db_failover", "target": "main", "at_s": 20, "duration_s": 5}]
    raw = base("monolith", f, duration=40.0)
    raw["deployments"][0]["databases"][0].update(shards=4, replication_lag_ms=2000)
    full = [run_once(raw, seed)[0] for seed in (1, 2)]
    raw["simulation"]["reduce"] = True
    scen = parse_scenario(copy.deepcopy(raw))
    assert reduce_factor(scen) == 4
    reduced = []
    for seed in (1, 2):
        topo = compile_topology(scen, scen.deployments[0], 4)
        rng = np.random.default_rng(seed)
        eng = Engine(topo, rng, 1.0, draws=BatchDraws(rng))
        reduced.append(eng.run(plan_sources(scen, 4, np.random.SeedSequence(seed), 4), 40.0))
    lost_full = np.mean([o.faults[0].lost_transactions for o in full])
    lost_red = np.mean([o.faults[0].lost_transactions for o in reduced])   # already x k
    assert 0.7 < lost_red / lost_full < 1.3, (lost_red, lost_full)
    fail_full = np.mean([o.error.sum() for o in full])
    fail_red = 4 * np.mean([o.error.sum() for o in reduced])
    assert 0.8 < fail_red / fail_full < 1.2, (fail_red, fail_full)


def test_reconnect_storm_of_a_share_of_the_online_players() -> None:
    """share 0.5 of 1,000 online players: 500 extra logins within 2 s of the window's end."""
    raw = base("monolith", [{"kind": "hang", "target": "app", "at_s": 20, "duration_s": 2,
                             "reconnect": {"operation": "login", "over_s": 2, "share": 0.5}}])
    out, ops = run_once(raw)
    login = out.op == ops.index("login")
    storm = int((login & (out.t >= 22) & (out.t < 24)).sum())
    usual = RATE * 0.2 * 2
    assert 500 + 0.5 * usual < storm < 500 + 1.6 * usual, storm
    scen = parse_scenario(copy.deepcopy(raw))
    rc = compile_topology(scen, scen.deployments[0]).faults[0].reconnect
    assert rc is not None and rc.count == 500 and rc.space == 100_000
