"""Calibration and validation logic: the calibrated scenario, the rate a flat population
simulates at, the USL fit, the joined `testbed validate` command."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from loadgen.behaviour import Players
from loadgen.calibrate import (
    Calibration,
    Level,
    MixLevel,
    OneOperation,
    calibrated_scenario,
    write_scenario,
)
from loadgen.validate import at_rate, fit_usl, usl
from sim.model.population import ArrivalStream
from sim.model.scenario import load_scenario, parse_scenario
from testbed.cli import cli

ROOT = Path(__file__).resolve().parents[2]
BASE = load_scenario(ROOT / "scenarios" / "baseline_day.yaml")
OPS = [o for o, spec in BASE.operations.items() if spec.weight > 0]


QUANTILES_MS = [1.5 + i / 199 for i in range(200)]  # latency 1.5-2.5 ms, mean 2.0


def _cal(topology: str, roles: dict[str, float], mixes: bool = False) -> Calibration:
    cal = Calibration(topology, "http://127.0.0.1:1")
    for rate, factor in ((20.0, 1.5), (60.0, 1.0)):
        for op in OPS:
            cal.levels.append(Level(op, rate, {op: 100}, {r: ms * factor for r, ms in
                                                          roles.items()}, 2.0, 0.8, 9.0, 0,
                                    QUANTILES_MS, 0.0))
    if mixes:  # CPU per second = 50 ms fixed + 0.3 ms per request, for each role
        for rate in (20.0, 60.0, 200.0):
            cal.mixes.append(MixLevel(rate, int(rate * 4), {r: 50 / rate + 0.3 for r in roles},
                                      0.01 + rate * 2e-5, 0.2, 1.0, 5.0))
    return cal


@pytest.mark.parametrize(("topology", "roles", "components"), [
    ("monolith", {"serve": 0.9}, {"wallet", "player"}),
    ("microservices", {"public": 0.2, "wallet": 0.6, "fraud": 0.1, "analytics": 0.05,
                       "player": 0.0001}, {"gateway", "wallet", "fraud", "analytics"}),
])
def test_calibrated_scenario_is_valid_and_mirrors_the_measurements(
        tmp_path: Path, topology: str, roles: dict[str, float], components: set[str]) -> None:
    raw, header = calibrated_scenario(BASE, _cal(topology, roles), 60.0, "testbed calibrate x")
    sc = write_scenario(raw, header, tmp_path / "cal.yaml")
    assert (tmp_path / "cal.yaml").read_text().startswith("# Calibrated")
    assert "testbed calibrate x" in header and "20.0/s" in header
    dep = sc.deployments[0]
    assert dep.kind == topology
    assert {c for s in dep.services for c in s.components} >= components
    bet = sc.operations["bet"]
    total = sum(sc.demand(s.cpu).mean_s() * 1000  # type: ignore[union-attr]
                for s in bet.steps if s.cpu is not None)
    kept = sum(ms for ms in roles.values() if ms >= 0.02 * sum(roles.values()))
    assert total == pytest.approx(kept, rel=1e-3)  # measured at 60/s, not the 20/s level
    wait = next(s for s in bet.steps if s.external is not None)
    # latency quantiles minus the CPU at the lowest rate (none below zero)
    off = [max(0.0, q - 1.5 * sum(roles.values())) for q in QUANTILES_MS]
    assert sc.demand(wait.external).mean_s() * 1000 == pytest.approx(np.mean(off), rel=1e-3)
    if topology == "microservices":
        modes = {s.component: s.mode for s in bet.steps if s.cpu is not None}
        assert modes["fraud"] == "async" and modes["gateway"] == "sync"
        assert "player" not in modes  # below 2% of the operation's CPU: noise


def test_one_operation_source_puts_a_bet_before_each_settlement() -> None:
    src = OneOperation(Players(BASE, 2, "t-", 1), "win")
    seen = []
    for _ in range(6):
        req = src.next()
        src.answered(req, 200)
        seen.append(req.operation)
    assert seen == ["bet", "win"] * 3


@pytest.mark.parametrize("rate", [25.0, 400.0])
def test_a_flat_population_simulates_the_requested_rate(rate: float) -> None:
    sc = at_rate(BASE, rate, 30.0)
    stream = ArrivalStream(sc, np.random.default_rng(1))
    assert float(np.sum(stream.rate(10.0))) == pytest.approx(rate, rel=1e-9)
    assert sc.simulation.duration_s == 30.0 and not sc.population.spikes


def test_usl_fit_recovers_known_parameters() -> None:
    n = np.array([1, 2, 4, 8, 16, 32, 64], dtype=float)
    x = usl(n, 100.0, 0.05, 0.002)
    fit = fit_usl(list(n), list(x))
    assert fit["sigma"] == pytest.approx(0.05, rel=0.01)
    assert fit["kappa"] == pytest.approx(0.002, rel=0.01)
    assert fit["peak_concurrency"] == pytest.approx(np.sqrt(0.95 / 0.002), rel=0.01)


def test_usl_needs_three_points() -> None:
    assert np.isnan(fit_usl([1.0, 2.0], [10.0, 19.0])["sigma"])


def test_validate_asks_for_what_to_validate_against() -> None:
    out = CliRunner().invoke(cli, ["validate"])
    assert out.exit_code == 2 and "--analytic, or SCENARIO" in out.output
    out = CliRunner().invoke(cli, ["validate", str(ROOT / "scenarios" / "baseline_day.yaml"),
                                   "--topology", "monolith", "--target", "ftp://x"])
    assert out.exit_code == 2 and "http://host:port" in out.output


def test_database_backends_become_db_demands_on_a_pooled_service(tmp_path: Path) -> None:
    roles = {"serve": 0.6, "database": 0.3}
    raw, header = calibrated_scenario(BASE, _cal("monolith", roles), 60.0, "x")
    sc = write_scenario(raw, header, tmp_path / "cal.yaml")
    step = next(s for s in sc.operations["bet"].steps if s.db is not None)
    assert step.component == "wallet"
    assert sc.demand(step.db).mean_s() * 1000 == pytest.approx(0.3)  # type: ignore[union-attr]
    assert sc.demand(step.cpu).mean_s() * 1000 == pytest.approx(0.6)  # type: ignore[union-attr]
    app = sc.deployments[0].services[0]
    assert app.db_pool > 0 and app.database == "main"
    assert [d.name for d in sc.deployments[0].databases] == ["main"]


def test_validate_analytic_still_reaches_the_simulators_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    import sim.analysis.validate as analytic

    table = pd.DataFrame([{"case": "M/M/1 rho 0.5", "metric": "mean wait", "theory": 1.0,
                           "simulated": 1.01, "ci95": 0.02, "rel_error": 0.01, "pass": True}])
    seen = {}

    def fake_cases(quick: bool, seed: int) -> list[str]:
        seen["quick"] = quick
        return ["case"]

    monkeypatch.setattr(analytic, "cases", fake_cases)
    monkeypatch.setattr(analytic, "evaluate", lambda cases, jobs, progress: table)
    out = CliRunner().invoke(cli, ["validate", "--analytic", "--quick"])
    assert out.exit_code == 0, out.output
    assert "1 passed, 0 failed" in out.output and seen == {"quick": True}


def test_mix_levels_split_fixed_cpu_from_the_requests_and_make_the_host(tmp_path: Path) -> None:
    # the server spends 50 ms/s whatever the load plus 0.3 ms per request: per request it
    # looks like 2.8 ms at 20/s and 0.55 at 200/s; calibrate must find the fixed part (host
    # background), keep 0.3 ms on the path (flat cpu_by_rate) and put the generator on the host
    raw, header = calibrated_scenario(BASE, _cal("monolith", {"serve": 0.9}, mixes=True),
                                      60.0, "x")
    sc = write_scenario(raw, header, tmp_path / "cal.yaml")
    dep = sc.deployments[0]
    assert dep.host is not None
    assert dep.host.cores >= 1
    assert dep.host.client_ms_per_request == pytest.approx(0.02, rel=1e-2)
    assert dep.host.background_cores == pytest.approx(0.01 + 0.2 + 0.05, abs=2e-3)
    table = dep.services[0].cpu_by_rate
    assert table is not None and [p.rps for p in table] == [20.0, 60.0, 200.0]
    assert all(p.factor == pytest.approx(1.0, rel=1e-3) for p in table)
    share = 0.3 / (50 / 60 + 0.3)  # on the path at the use rate
    bet = sc.operations["bet"]
    cpu = sum(sc.demand(s.cpu).mean_s() * 1000 for s in bet.steps  # type: ignore[union-attr]
              if s.cpu is not None)
    assert cpu == pytest.approx(0.9 * share, rel=1e-3)
    assert "mix" in header and "50.0/s" not in header.split("mix")[0][-10:]


def _truth(cal: Calibration, waits_ms: dict[float, float]) -> dict:
    """The calibrated scenario with a known off-CPU wait (constant, by rate) per operation."""
    raw, _ = calibrated_scenario(BASE, cal, 60.0, "x")
    for name in [n for n in raw["demands"] if n.endswith("_off_cpu")]:
        raw["demands"][name] = {"kind": "empirical_by_rate", "levels": [
            {"rps": r, "samples_ms": [w]} for r, w in sorted(waits_ms.items())]}
    return raw


def test_the_off_cpu_fit_takes_out_what_the_model_adds(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    # "measurements" simulated with a known wait per rate (1.0 ms at 20/s, 0.4 at 200/s):
    # the calibrated wait starts as latency less on-path CPU (queueing still in it) and the
    # fit must bring the model back onto the measured p50/p95/p99 at every mix level
    from loadgen import calibrate as cal_mod
    from loadgen.validate import predict

    cal = _cal("monolith", {"serve": 0.9}, mixes=True)
    truth = parse_scenario(_truth(cal, {20.0: 1.0, 60.0: 0.8, 200.0: 0.4}))
    for mx in cal.mixes:
        mx.seconds = 4.0
        s = predict(truth, "monolith", mx.rate, 8.0, 1,
                    mx.other_cores + mx.generator_cores).summary.set_index("operation")
        mx.knots_by_op = {op: [float(s.loc[op, c]) for c in ("p50_ms", "p95_ms", "p99_ms")]
                          for op in s.index}
        mx.by_op = {op: (k[0], k[2]) for op, k in mx.knots_by_op.items()}
        mx.quantiles_by_op = {op: list(np.interp(cal_mod.LEVEL_QUANTILES, cal_mod.FIT_KNOTS, k))
                              for op, k in mx.knots_by_op.items()}
    raw, _ = calibrated_scenario(BASE, cal, 60.0, "x")
    wait = raw["demands"]["bet_off_cpu"]
    assert wait["kind"] == "empirical_by_rate"
    assert [lv["rps"] for lv in wait["levels"]] == [20.0, 60.0, 200.0]
    assert "pauses" not in raw["deployments"][0]["host"]  # no level stalled
    monkeypatch.setattr(cal_mod, "FIT_SIM_S", 8.0)
    rounds = cal_mod.fit_off_cpu(raw, cal, lambda s: None, 2)
    assert len(rounds) == 3
    errors = [p50 for p50, _ in rounds]
    assert min(errors) < errors[0] and min(errors) < 0.08
    assert all(math.isfinite(p99) for _, p99 in rounds)
    fitted = raw["demands"]["bet_off_cpu"]["levels"]
    assert all(v >= 0 for lv in fitted for v in lv["samples_ms"])
    assert all(lv["samples_ms"] == sorted(lv["samples_ms"]) for lv in fitted)
    # the fitted wait falls with the rate as the truth's (1.0 ms at 20/s, 0.4 at 200/s);
    # its shape is not identifiable from three quantiles, its level is
    means = [float(np.mean(lv["samples_ms"])) for lv in fitted]
    assert means[0] == pytest.approx(1.0, abs=0.25)
    assert means[-1] == pytest.approx(0.4, abs=0.2)
    assert means[0] > means[1] > means[2]
    parse_scenario(raw)  # still a valid scenario


def test_stalls_in_the_mix_levels_become_host_pauses() -> None:
    cal = _cal("monolith", {"serve": 0.9}, mixes=True)
    for mx, stalls in zip(cal.mixes, ([], [12.0], [6.0, 40.0, 7.5]), strict=True):
        mx.seconds, mx.stalls_ms = 10.0, stalls
        mx.quantiles_by_op = {op: QUANTILES_MS[::2] for op in OPS}
    raw, _ = calibrated_scenario(BASE, cal, 60.0, "x")
    pauses = raw["deployments"][0]["host"]["pauses"]
    assert pauses["by_rate"] == [
        {"rps": 20.0, "per_s": 0.0}, {"rps": 60.0, "per_s": 0.1, "durations_ms": [12.0]},
        {"rps": 200.0, "per_s": 0.3, "durations_ms": [6.0, 7.5, 40.0]}]
    assert pauses["durations_ms"] == [6.0, 7.5, 12.0, 40.0]
    assert parse_scenario(raw).deployments[0].host.pauses is not None  # type: ignore[union-attr]


def test_one_stall_does_not_end_the_capacity_ramp() -> None:
    # 1,000 answers in 1 ms and 10 held 2 s by one stall: the mean is 20x the median; the
    # step kept up (the median says so), a queue growing through it would move the median
    from types import SimpleNamespace

    import pandas as pd

    from loadgen.record import Recorder
    from loadgen.validate import Step

    def step(slow: int) -> Step:
        rec = Recorder(0.0)
        for i in range(1000):
            rec.record("bet", i / 1000, i / 1000 + 0.001, None)
        for i in range(slow):
            rec.record("bet", 0.5 + i / 1000, 2.5, None)
        rec.flush()
        results = SimpleNamespace(
            meta={"achieved_rate_rps": 1000.0},
            summary=pd.DataFrame({"error_rate": [0.0], "requests": [1000 + slow]}))
        return Step(1000.0, results, rec)  # type: ignore[arg-type]

    stalled = step(10)
    assert stalled.mean_ms > 5 * stalled.p50_ms
    assert stalled.ok(base_p50_ms=1.0)
    assert not step(1200).ok(base_p50_ms=1.0)  # most requests late: past capacity


def _request_log(generator_pause: bool) -> object:
    """1,000/s for 10 s answered in 1 ms, and at 5 s a 40 ms pause: of the back office
    (every request sent then answered at its end) or of the generator (sent at its end)."""
    from loadgen.record import RequestLog

    log = RequestLog()
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.exponential(0.001, 10_000))
    for ti in t[t < 10.0].tolist():
        held = 5.040 - ti if 5.0 <= ti < 5.040 else 0.0
        lag = held if generator_pause else 0.0
        log.add("bet", ti, 0.001 + held, None, lag)
    return log


def test_a_stall_of_the_back_office_is_a_pause_one_of_the_generator_is_not() -> None:
    from loadgen.calibrate import level_latencies

    _, knots, stalls = level_latencies(_request_log(generator_pause=False))  # type: ignore[arg-type]
    assert len(stalls) == 1 and stalls[0].duration_s == pytest.approx(0.040, abs=0.003)
    _, knots_g, stalls_g = level_latencies(_request_log(generator_pause=True))  # type: ignore[arg-type]
    assert stalls_g == []  # sent late, answered at once: the generator's pause
    assert knots_g["bet"] == knots["bet"]  # the latency from the intended time keeps it


def test_auto_mix_rates_spread_over_the_capacity_a_ramp_finds(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from types import SimpleNamespace

    from loadgen import calibrate as cal_mod

    steps = [SimpleNamespace(achieved=r, confirming=False) for r in (100.0, 150.0, 225.0)]
    monkeypatch.setattr(cal_mod, "ramp", lambda plan, start, seconds, say: steps)
    monkeypatch.setattr(cal_mod, "capacity", lambda s: max(x.achieved for x in s))
    rates = cal_mod.auto_mix_rates(None, 100.0, 1.0)  # type: ignore[arg-type]
    assert rates == tuple(round(f * 225.0, 1) for f in cal_mod.MIX_FRACTIONS)
    # the calibrated range covers a validation's 80% even when its ramp finds a capacity
    # 10% above the calibration's (session 7: 950/s and 998/s; 80% lay beyond it)
    assert max(cal_mod.MIX_FRACTIONS) >= 0.8 * 1.1 / 1.05
    # sessions 12 and 13: the validation's capacity 16-17% above the calibration's; its
    # 80% level then lay beyond a top level at 90%
    from loadgen import validate as val
    assert max(cal_mod.MIX_FRACTIONS) * val.CALIBRATED_MARGIN >= 0.8 * 1.25
    assert max(cal_mod.MIX_FRACTIONS) <= 1.0  # never past the rate a confirming step held


def test_operations_with_few_requests_are_reported_not_judged() -> None:
    import pandas as pd

    from loadgen.validate import MIN_JUDGED_REQUESTS, judged_misses, markdown

    rows = []
    for op, n, err in (("bet", 20_000, 0.05), ("login", 70, 3.0), ("win", 15_000, 0.4)):
        rows.append({"level": 0.5, "offered_rps": 1000.0, "operation": op,
                     "measured_requests": n, "measured_throughput_rps": n / 20,
                     "predicted_throughput_rps": n / 20, "measured_p50_ms": 1.0,
                     "predicted_p50_ms": 1.0, "error_p50_ms": 0.0, "measured_p99_ms": 5.0,
                     "predicted_p99_ms": 5.0 * (1 + err), "error_p99_ms": err,
                     "measured_busiest_process_util": 0.5, "predicted_busiest_cpu_util": 0.5})
    table = pd.DataFrame(rows)
    assert 70 < MIN_JUDGED_REQUESTS <= 15_000
    assert judged_misses(table) == 1  # the win; the login's 70 requests are not judged
    fit = {"lambda": 1.0, "sigma": 0.1, "kappa": 0.0, "peak_concurrency": float("inf"),
           "peak_throughput": 10.0, "points": 3}
    text = markdown(table, fit, 100.0, 100.0, "monolith", "x")
    assert "| login |" in text and "reported (few requests)" in text
    # whether a longer step held the capacity is said (session 12: none did, and nothing
    # in the report said so)
    assert "not confirmed" not in text and "held by a step" not in text
    assert "held by a step" in markdown(table, fit, 100.0, 100.0, "monolith", "x",
                                        confirmed=True)
    unheld = markdown(table, fit, 100.0, 100.0, "monolith", "x", confirmed=False)
    assert "**not confirmed**" in unheld and "60%" in unheld


def test_levels_beyond_the_calibrated_range_are_flagged(tmp_path: Path) -> None:
    import pandas as pd

    from loadgen.validate import CALIBRATED_MARGIN, beyond, calibrated_up_to, markdown

    assert calibrated_up_to(BASE) is None  # no figure by rate: nothing to be beyond
    raw, header = calibrated_scenario(BASE, _cal("monolith", {"serve": 0.9}, mixes=True),
                                      60.0, "x")
    # a table of off-CPU waits measured up to 350/s, beyond the mixes' 200/s
    raw["demands"]["bet_off_cpu"] = {"kind": "empirical_by_rate", "levels": [
        {"rps": 20.0, "samples_ms": [0.5]}, {"rps": 350.0, "samples_ms": [0.4]}]}
    sc = write_scenario(raw, header, tmp_path / "cal.yaml")
    assert calibrated_up_to(sc) == 350.0
    # another operation's wait stopping at 200/s holds its 200/s figures beyond: the
    # scenario is calibrated up to 200/s; a service's cpu_by_rate (by the rate into that
    # service, another scale) does not count
    raw["demands"]["win_off_cpu"] = {"kind": "empirical_by_rate", "levels": [
        {"rps": 20.0, "samples_ms": [0.5]}, {"rps": 200.0, "samples_ms": [0.4]}]}
    raw["deployments"][0]["services"][0]["cpu_by_rate"][-1]["rps"] = 1000.0
    assert calibrated_up_to(write_scenario(raw, header, tmp_path / "cal2.yaml")) == 200.0
    assert not beyond(350.0 * CALIBRATED_MARGIN, 350.0)
    assert beyond(350.0 * CALIBRATED_MARGIN * 1.01, 350.0)
    row = {"level": 0.8, "offered_rps": 400.0, "operation": "bet", "measured_requests": 8000,
           "measured_throughput_rps": 400.0, "predicted_throughput_rps": 400.0,
           "measured_p50_ms": 1.0, "predicted_p50_ms": 1.0, "error_p50_ms": 0.0,
           "measured_p99_ms": 5.0, "predicted_p99_ms": 5.0, "error_p99_ms": 0.0,
           "measured_busiest_process_util": 0.5, "predicted_busiest_cpu_util": 0.5,
           "beyond_calibration": True}
    fit = {"lambda": 1.0, "sigma": 0.1, "kappa": 0.0, "peak_concurrency": float("inf"),
           "peak_throughput": 10.0, "points": 3}
    text = markdown(pd.DataFrame([row]), fit, 500.0, 500.0, "monolith", "x", 350.0)
    assert "| 80% † | 400 |" in text and "calibrated up to 350/s" in text


def test_on_path_work_is_the_operations_own_synchronous_steps() -> None:
    # an operation whose name extends another's (bet_big) and an async consumer (fraud)
    # are not on the bet's path: the old name-prefix sum counted both (10.8 ms)
    from loadgen.calibrate import _on_path_ms

    demands = {name: {"kind": "gamma", "mean_ms": ms, "cv": 0.5} for name, ms in (
        ("bet_wallet_cpu", 1.0), ("bet_fraud_cpu", 0.5), ("bet_db", 0.3),
        ("bet_big_wallet_cpu", 9.0))}
    steps = [{"component": "wallet", "cpu": "bet_wallet_cpu", "db": "bet_db"},
             {"component": "fraud", "cpu": "bet_fraud_cpu", "mode": "async"}]
    assert _on_path_ms(demands, steps) == pytest.approx(1.3)


def test_predictions_carry_the_simulations_confidence_interval() -> None:
    from types import SimpleNamespace

    import pandas as pd

    from loadgen.validate import compare, markdown

    def res(p50: float, ci: float) -> SimpleNamespace:
        return SimpleNamespace(summary=pd.DataFrame([{
            "operation": "bet", "requests": 5000, "throughput_rps": 100.0,
            "throughput_rps_ci": 1.0, "p50_ms": p50, "p50_ms_ci": ci, "p99_ms": 9.0,
            "p99_ms_ci": 0.5}]), stations=pd.DataFrame(columns=["kind", "utilisation"]))

    t = compare(0.5, 100.0, res(2.0, float("nan")), res(2.2, 0.1))  # type: ignore[arg-type]
    assert t.loc[0, "predicted_p50_ms_ci"] == 0.1
    assert t.loc[0, "error_p50_ms"] == pytest.approx(0.1)
    fit = {"lambda": 1.0, "sigma": 0.1, "kappa": 0.0, "peak_concurrency": float("inf"),
           "peak_throughput": 10.0, "points": 3}
    assert "| 2.00 | 2.20 ± 0.10 | +10% |" in markdown(t, fit, 100.0, 200.0, "monolith", "x")


def test_a_level_measured_while_the_hypervisor_took_cores_is_left_out() -> None:
    from loadgen.calibrate import kept_up
    from loadgen.steady import UNSTEADY_STEAL

    cal = _cal("monolith", {"serve": 0.9}, mixes=True)
    for mx, stalls in zip(cal.mixes, ([], [12.0] * 40, [6.0, 40.0, 7.5]), strict=True):
        mx.seconds, mx.stalls_ms = 10.0, stalls
        mx.quantiles_by_op = {op: QUANTILES_MS[::2] for op in OPS}
    cal.mixes[1].steal_cores = 2 * UNSTEADY_STEAL  # its 40 stalls were the neighbours'
    assert [m.rate for m in kept_up(cal.mixes)] == [20.0, 200.0]
    raw, _ = calibrated_scenario(BASE, cal, 60.0, "x")
    assert [p["rps"] for p in raw["deployments"][0]["host"]["pauses"]["by_rate"]] == [20.0,
                                                                                      200.0]
    assert [lv["rps"] for lv in raw["demands"]["bet_off_cpu"]["levels"]] == [20.0, 200.0]
    # with fewer than two steady levels every level kept up is used
    cal.mixes[0].steal_cores = cal.mixes[2].steal_cores = 1.0
    assert len(kept_up(cal.mixes)) == 3


def test_a_burst_of_steal_alone_does_not_leave_a_level_out_but_an_episode_does() -> None:
    from loadgen.calibrate import kept_up
    from loadgen.steady import UNSTEADY_BURST_S

    cal = _cal("monolith", {"serve": 0.9}, mixes=True)
    cal.mixes[2].steal_burst_s = 2 * UNSTEADY_BURST_S  # the top level: every try had one
    assert [m.rate for m in kept_up(cal.mixes)] == [20.0, 60.0, 200.0]
    cal.mixes[1].seconds, cal.mixes[1].episode_s = 20.0, 1.0  # 5% of its window
    assert [m.rate for m in kept_up(cal.mixes)] == [20.0, 200.0]
    cal.mixes[1].episode_s = 0.0
    cal.mixes[1].stalls_ms = [262.0]  # one stall holding 1.3% of the window
    assert [m.rate for m in kept_up(cal.mixes)] == [20.0, 200.0]
    cal.mixes[1].stalls_ms = [25.0] * 50  # routine stalls: the level stays
    assert [m.rate for m in kept_up(cal.mixes)] == [20.0, 60.0, 200.0]


def test_a_calibration_is_rebuilt_from_its_levels_without_load(tmp_path: Path) -> None:
    from loadgen.calibrate import write_levels

    levels = tmp_path / "cal.levels.json"
    write_levels(_cal("monolith", {"serve": 0.9}), levels)
    out = tmp_path / "again.yaml"
    # the target is nobody: no load is sent, nothing needs to listen
    res = CliRunner().invoke(cli, ["calibrate", "--topology", "monolith", "--out", str(out),
                                   "--target", "http://127.0.0.1:1",
                                   "--from-levels", str(levels)])
    assert res.exit_code == 0, res.output
    sc = load_scenario(out)
    assert set(sc.operations) == set(OPS)
    assert "--from-levels" in out.read_text().split("\n", 3)[1]
    wrong = CliRunner().invoke(cli, ["calibrate", "--topology", "microservices", "--out",
                                     str(out), "--from-levels", str(levels)])
    assert wrong.exit_code == 2 and "measured a monolith back office" in wrong.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = CliRunner().invoke(cli, ["calibrate", "--topology", "monolith", "--out", str(out),
                                   "--from-levels", str(bad)])
    assert res.exit_code == 2 and "--from-levels" in res.output
    res = CliRunner().invoke(cli, ["calibrate", "--topology", "monolith", "--out", str(out),
                                   "--from-levels", str(levels), "--use-rate", "33"])
    assert res.exit_code == 2 and "--use-rate" in res.output


def test_a_validation_is_predicted_again_from_its_measurements(tmp_path: Path) -> None:
    # "measurements" made by the model itself: predicted again with the same scenario (same
    # seed, rates and background) every error is zero and nothing misses
    import math

    import numpy as np
    import pandas as pd

    from loadgen.record import RequestLog
    from loadgen.validate import LOG_FILE, judged_misses, predict

    raw, header = calibrated_scenario(BASE, _cal("monolith", {"serve": 0.9}, mixes=True),
                                      60.0, "x")
    raw["simulation"]["replications"] = 2
    sc = write_scenario(raw, header, tmp_path / "cal.yaml")
    measured = tmp_path / "measured"
    rows = []
    for level, rate in ((0.2, 40.0), (0.5, 100.0)):
        res = predict(sc, "monolith", rate, 8.0, 1, 0.3)
        res.save(measured / f"level_{round(level * 100)}")
        rows.append({"level": level, "offered_rps": rate, "operation": "bet",
                     "besides_back_office_cores": 0.3, "measured_stalls": 2,
                     "longest_stall_ms": 9.0})
    pd.DataFrame(rows).to_csv(measured / "validate.csv", index=False)
    log = RequestLog()  # level 20% kept its requests: their spread is read again
    for i in range(3000):
        log.add("bet", i / 50, 0.002 + 0.001 * (i % 7), None)
    np.savez_compressed(measured / "level_20" / LOG_FILE, **log.arrays())
    out = tmp_path / "again"
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "cal.yaml"), "--topology",
                                   "monolith", "--out", str(out), "--sim-seconds", "8",
                                   "-j", "1", "--from-measured", str(measured)])
    table = pd.read_csv(out / "validate.csv")
    assert set(table["level"]) == {0.2, 0.5}
    assert table["error_p50_ms"].abs().max() < 1e-9, table
    assert (table["measured_stalls"] == 2).all()
    by_level = table[table["operation"] == "bet"].set_index("level")
    assert 1.9 < by_level.loc[0.2, "measured_p50_lo_ms"] <= by_level.loc[0.2,
                                                                          "measured_p99_hi_ms"]
    assert math.isnan(by_level.loc[0.5, "measured_p99_lo_ms"])  # no log kept there
    assert judged_misses(table) == 0 and res.exit_code == 0, res.output
    assert "predicted again, no load sent" in (out / "validate.md").read_text()
    bad = CliRunner().invoke(cli, ["validate", str(tmp_path / "cal.yaml"), "--topology",
                                   "monolith", "--out", str(out), "--from-measured",
                                   str(tmp_path)])
    assert bad.exit_code == 2 and "--from-measured" in bad.output


def test_mix_levels_request_logs_are_kept_and_analysed_again(tmp_path: Path) -> None:
    from loadgen.calibrate import logs_path, read_levels, reanalyse, write_levels
    from loadgen.record import RequestLog

    cal = _cal("monolith", {"serve": 0.9}, mixes=True)
    rng = np.random.default_rng(3)
    log = RequestLog()
    for i in range(3000):  # 1,000/s for 3 s, ~2 ms; the server answers nobody at 1.0-1.05 s
        t = i / 1000
        lat = 0.002 + rng.exponential(0.0002) + (1.05 - t if 1.0 <= t < 1.05 else 0.0)
        log.add("bet" if i % 2 else "balance", t, lat, None if i % 97 else "409", 0.0)
    cal.mixes[1].log = log
    levels = tmp_path / "cal.levels.json"
    write_levels(cal, levels)
    assert logs_path(levels).name == "cal.levels.logs.npz" and logs_path(levels).exists()
    back = read_levels(levels)
    assert back.mixes[0].log is None and back.mixes[1].log is not None
    assert list(back.mixes[1].log.op) == list(log.op)
    assert list(back.mixes[1].log.code) == list(log.code)
    assert np.array_equal(np.frombuffer(back.mixes[1].log.latency_s), np.frombuffer(
        log.latency_s))
    assert back.mixes[1].stalls_ms == [] and reanalyse(back) == 1
    assert len(back.mixes[1].stalls_ms) == 1
    assert back.mixes[1].stalls_ms[0] == pytest.approx(50, abs=4)
    assert set(back.mixes[1].quantiles_by_op) == {"bet", "balance"}


def test_the_calibrated_model_does_not_count_the_measured_spread_twice(tmp_path: Path) -> None:
    # every operation measured at 1.5-2.5 ms (p95 ~2.45), of which 1.4 ms CPU: the wait off
    # the CPU carries the whole measured spread, so the CPU's own must be small. With an
    # exponential-like CPU (cv 1, the old shape) the model read p95 ~5 ms at light load.
    from loadgen.validate import predict

    raw, header = calibrated_scenario(BASE, _cal("monolith", {"serve": 1.4 / 1.5}), 20.0,
                                      "testbed calibrate x")  # 1.4 ms CPU at 20/s
    sc = write_scenario(raw, header, tmp_path / "cal.yaml")
    pred = predict(sc, "monolith", 20.0, 20.0, 1).summary.set_index("operation")
    measured_p95 = QUANTILES_MS[int(0.95 * len(QUANTILES_MS))]
    for op in ("bet", "balance"):
        assert pred.loc[op, "p50_ms"] == pytest.approx(2.0, rel=0.15), op
        assert pred.loc[op, "p95_ms"] <= 1.3 * measured_p95, (op, pred.loc[op, "p95_ms"])


def test_a_prediction_at_a_low_rate_simulates_enough_requests() -> None:
    from loadgen.validate import MIN_SIM_REQUESTS, predict

    sc = parse_scenario(calibrated_scenario(BASE, _cal("monolith", {"serve": 0.9}), 60.0,
                                            "x")[0], "cal")
    res = predict(sc, "monolith", 10.0, 5.0, 1)  # 5 s at 10/s would be 50 requests
    assert res.summary["requests"].sum() >= 0.9 * MIN_SIM_REQUESTS  # a Poisson count


def test_every_measured_level_starts_from_a_quiet_back_office_and_none_after_a_simulation(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Regression (session 9): a validation simulated each level right after measuring it,
    so the next level started after a minute idle, while the calibration's mix levels ran
    back to back; at 80% the model read p50 11-32% above the validation in four runs of four.
    Now every measured level of both follows a rest, and a validation simulates only once
    every level is measured."""
    from types import SimpleNamespace

    import pandas as pd

    from loadgen import calibrate as cal_mod
    from loadgen import validate as val
    from loadgen.steady import Steadiness

    events: list[str] = []
    monkeypatch.setattr(val, "rest", lambda plan, say: events.append("rest"))

    def fake_results(rate: float) -> SimpleNamespace:
        def save(path: Path) -> None:
            events.append(f"save {rate:g}")
        return SimpleNamespace(save=save, meta={})

    def fake_measure_at(plan: object, rate: float, seconds: float, tag: str,
                        lead_in_s: float = 0.0) -> SimpleNamespace:
        events.append(f"measure {rate:g}")
        return SimpleNamespace(results=fake_results(rate), rec=SimpleNamespace(log=None),
                               steal_cores=0.0,
                               steal_burst_s=0.0, tail_share=0.0, besides_cores=0.1,
                               stalls_ms=[], episode_s=0.0, steadiness=Steadiness())

    def fake_predict(scenario: object, topology: str, rate: float, *args: object
                     ) -> SimpleNamespace:
        events.append(f"predict {rate:g}" + (f" on {args[-1]:g}" if len(args) == 4
                                              and args[-1] != 1.0 else ""))
        return SimpleNamespace()

    def fake_compare(level: float, rate: float, measured: object, predicted: object
                     ) -> pd.DataFrame:
        return pd.DataFrame([{"level": level, "offered_rps": rate, "operation": "bet",
                              "measured_p50_ms": 1.0, "predicted_p50_ms": 1.0,
                              "measured_p99_ms": 2.0, "predicted_p99_ms": 2.0}])

    monkeypatch.setattr(val, "ramp", lambda plan, start, seconds, say: [])
    monkeypatch.setattr(val, "capacity", lambda steps: 1000.0)
    monkeypatch.setattr(val, "kept_up", lambda steps: [])
    monkeypatch.setattr(val, "fit_usl", lambda n, x: {"sigma": 0.0, "kappa": 0.0,
                                                      "peak_throughput": 0.0})
    monkeypatch.setattr(val, "measure_at", fake_measure_at)
    monkeypatch.setattr(val, "predict", fake_predict)
    monkeypatch.setattr(val, "compare", fake_compare)
    monkeypatch.setattr(val, "calibrated_up_to", lambda sc: None)
    monkeypatch.setattr(val, "ramp_table", lambda steps: pd.DataFrame({"offered_rps": []}))
    monkeypatch.setattr(val, "plot", lambda *a: None)
    monkeypatch.setattr(val, "markdown", lambda *a: "")
    plan = SimpleNamespace(scenario=BASE)
    monkeypatch.setattr(val, "deployment_for", lambda sc, t: "monolith")
    val.run_validation(plan, "monolith", tmp_path, 100.0, 1.0, 1.0, 1.0, 1,  # type: ignore[arg-type]
                       "x", lambda s: None)
    rates = [f"{level * 1000:g}" for level in val.LEVELS]
    measured = [e for e in events if e.startswith(("rest", "measure"))]
    assert measured == [x for r in rates for x in ("rest", f"measure {r}")]
    first_predict = next(i for i, e in enumerate(events) if e.startswith("predict"))
    assert all(not e.startswith("measure") for e in events[first_predict:])
    assert [e for e in events if e.startswith("predict")] == [f"predict {r}" for r in rates]

    # with a calibration that measured reference windows: one before each level, between
    # rests, at the calibration's reference rate; the prediction runs on their factor
    events.clear()
    monkeypatch.setattr(val, "reference", lambda plan, rate, tag:
                        events.append(f"ref {rate:g}") or val.Reference(2.4, 3.3))
    calibrated = val.Calibrated((100.0, 1000.0), (1.0, 1.0), 50.0, (2.0, 2.0), (3.0, 3.0))
    val.run_validation(plan, "monolith", tmp_path, 100.0, 1.0, 1.0, 1.0, 1,  # type: ignore[arg-type]
                       "x", lambda s: None, calibrated)
    measured = [e for e in events if e.startswith(("rest", "measure", "ref"))]
    assert measured == [x for r in rates for x in ("rest", "ref 50", "rest", f"measure {r}")]
    assert [e for e in events if e.startswith("predict")] == \
        [f"predict {r} on 1.2" for r in rates]
    events.clear()  # --no-machine-correction: measured and reported, not used
    val.run_validation(plan, "monolith", tmp_path, 100.0, 1.0, 1.0, 1.0, 1,  # type: ignore[arg-type]
                       "x", lambda s: None, calibrated, False)
    assert "ref 50" in events
    assert [e for e in events if e.startswith("predict")] == [f"predict {r}" for r in rates]
    table = pd.read_csv(tmp_path / "validate.csv")
    assert table["machine_factor"].tolist() == pytest.approx([1.2] * len(rates))
    assert table["reference_latency_ratio"].tolist() == pytest.approx([1.1] * len(rates))
    assert not table["machine_corrected"].any()

    # the calibration's mix levels: a rest before each, retries included
    cal_events: list[str] = []
    monkeypatch.setattr(cal_mod, "rest", lambda plan, say: cal_events.append("rest"))
    tries: dict[float, int] = {}

    def fake_mix(plan: object, rate: float, database: str | None = None) -> MixLevel:
        tries[rate] = tries.get(rate, 0) + 1
        cal_events.append(f"mix {rate:g}")
        mx = MixLevel(rate, 100, {"serve": 0.5}, 0.01, 0.0, 1.0, 5.0)
        mx.seconds = 10.0
        mx.stalls_ms = [300.0] if rate == 200.0 and tries[rate] == 1 else []  # 3%: again
        return mx

    monkeypatch.setattr(cal_mod, "measure_mix", fake_mix)
    monkeypatch.setattr(cal_mod, "reference",
                        lambda plan, rate, tag, s: cal_events.append(f"ref {rate:g}")
                        or val.Reference(1.5, 2.5))
    monkeypatch.setattr("loadgen.steady.RETRY_WAIT_S", 0.0)
    from loadgen.run import Plan

    base_plan = Plan(BASE, "http://127.0.0.1:1", "127.0.0.1", 1, 1.0, 10, 1, None,
                     "monolith", "p")
    cal = cal_mod.calibrate(base_plan, "monolith", (), mix_rates=(200.0, 100.0),
                            mix_seconds=1.0)
    # a reference window at the lowest mix rate before each level, between two rests
    assert cal_events == ["rest", "ref 100", "rest", "mix 200"] * 2 + \
        ["rest", "ref 100", "rest", "mix 100"]
    assert [(m.reference_rps, m.reference_cpu_ms, m.reference_p50_ms) for m in cal.mixes] \
        == [(100.0, 1.5, 2.5)] * 2
    assert cal_mod.calibrated_figures(cal).reference_rps == 100.0
    assert cal_mod.calibrated_figures(cal).reference_p50() == 2.5
    cal_events.clear()  # --reference-seconds 0: none
    cal = cal_mod.calibrate(base_plan, "monolith", (), mix_rates=(100.0,), mix_seconds=1.0,
                            reference_s=0.0)
    assert cal_events == ["rest", "mix 100"]
    assert cal_mod.calibrated_figures(cal).reference_rps is None


@pytest.mark.postgres
def test_a_level_on_postgresql_starts_just_after_a_checkpoint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A timed checkpoint writing during a level raised its p99 tenfold (monolith +
    PostgreSQL, 2,200/s: 93-507 ms against 9-17 just after a CHECKPOINT): with the database
    as a URL, the rest before every level asks for one, on the real server."""
    import psycopg

    from loadgen import validate as val
    from tests.reference_impl.conftest import PG_ADMIN

    def requested() -> int:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            row = conn.execute("SELECT checkpoints_req FROM pg_stat_bgwriter").fetchone()
            assert row is not None
            return int(row[0])

    order: list[str] = []
    said: list[str] = []
    monkeypatch.setattr(val, "settle_quiet", lambda cpu, say: order.append("quiet") or 5.0)
    before = requested()
    plan = SimpleNamespace(database_url=PG_ADMIN, database=None, target="http://127.0.0.1:9")
    monkeypatch.setattr(val, "server_cpu_seconds", lambda p: None)
    val.rest(plan, said.append)  # type: ignore[arg-type]
    assert requested() > before and order == ["quiet"] and not said
    # a refused checkpoint is said, and the level still rests
    plan = SimpleNamespace(database_url=PG_ADMIN.replace("postgres@", "no_such_role@"),
                           database=None, target="http://127.0.0.1:9")
    val.rest(plan, said.append)  # type: ignore[arg-type]
    assert order == ["quiet", "quiet"] and "no checkpoint before the level" in said[0]
    # without a URL, nothing is asked of the database
    before = requested()
    val.rest(SimpleNamespace(database_url=None, database=None,  # type: ignore[arg-type]
                             target="http://127.0.0.1:9"), said.append)
    assert requested() == before


@pytest.mark.parametrize("value, ok", [
    ("calib_mono", True), ("postgresql://postgres@127.0.0.1:5432/calib_mono", True),
    ("mysql://root@127.0.0.1/calib", False), ("postgresql://127.0.0.1:5432/", False),
    ("a/b", False), ("  ", False)])
def test_database_is_a_name_or_a_postgresql_url(value: str, ok: bool) -> None:
    from loadgen.cli import _database

    if ok:
        name, url = _database(None, None, value)  # type: ignore[arg-type]
        assert name == "calib_mono" and (url is None) == ("://" not in value)
    else:
        import click
        with pytest.raises(click.BadParameter, match="database name"):
            _database(None, None, value)  # type: ignore[arg-type]
    result = CliRunner().invoke(cli, ["validate", str(ROOT / "scenarios" / "baseline_day.yaml"),
                                      "--target", "http://127.0.0.1:9", "--topology",
                                      "monolith", "--out", "/tmp/never", "--database", value])
    if not ok:
        assert result.exit_code == 2 and "--database" in result.output


def _level(rate: float, p99: float, stalls_per_s: float, seconds: float = 60.0) -> MixLevel:
    mx = MixLevel(rate, int(rate * seconds), {"serve": 0.3}, 0.05, 0.0, 1.0, p99)
    mx.seconds = seconds
    mx.stalls_ms = [6.0] * round(stalls_per_s * seconds)
    return mx


def test_a_mix_level_is_added_where_its_neighbours_disagree_most() -> None:
    """Session 10, monolith + SQLite: stalls 0/s at 514/s and 2.7/s at 1,541/s (p99 2.5 and
    10 ms); interpolated, 1.2/s at the validation's 973/s where 0.2/s was measured."""
    from loadgen.calibrate import refine_rate

    session10 = [_level(513.8, 2.5, 0.0), _level(1541.4, 10.0, 2.7),
                 _level(2825.9, 22.2, 3.65), _level(3596.6, 27.4, 3.7)]
    assert refine_rate(session10) == 1027.6
    # gentle everywhere: nothing to add
    gentle = [_level(r, 2.0 + r / 1000, 0.1 * r / 1000) for r in (500, 1000, 1500, 2000)]
    assert refine_rate(gentle) is None
    # only the stalls jump (same p99): still split
    assert refine_rate([_level(500, 4.0, 0.0), _level(1000, 4.5, 1.0)]) == 750.0
    # neighbours already close together are not split again
    assert refine_rate([_level(1000, 2.0, 0.0), _level(1050, 9.0, 3.0)]) is None
    # a saturated level (p50 ten times the lowest) is not a neighbour
    sat = _level(3000, 900.0, 0.0)
    sat.p50_ms = 50.0
    assert refine_rate([_level(500, 2.0, 0.0), _level(1000, 2.5, 0.1), sat]) is None
    assert refine_rate([]) is None and refine_rate([_level(500, 2.0, 0.0)]) is None


def test_calibrate_measures_refined_levels_after_the_asked_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from loadgen import calibrate as cal_mod
    from loadgen.run import Plan
    from loadgen.validate import Reference

    monkeypatch.setattr(cal_mod, "rest", lambda plan, say: None)
    measured: list[float] = []

    def fake_mix(plan: object, rate: float, database: str | None = None) -> MixLevel:
        measured.append(rate)
        return _level(rate, 2.0 if rate < 1000 else 2.0 + (rate - 1000) / 50, 0.0)

    monkeypatch.setattr(cal_mod, "measure_mix", fake_mix)
    monkeypatch.setattr(cal_mod, "reference", lambda plan, rate, tag, s: Reference(1.5, 2.0))
    plan = Plan(BASE, "http://127.0.0.1:1", "127.0.0.1", 1, 1.0, 10, 1, None, "monolith", "p")
    said: list[str] = []
    cal = cal_mod.calibrate(plan, "monolith", (), said.append, mix_rates=(500.0, 1500.0),
                            mix_seconds=1.0, refine=2)
    # 500/s p99 2 ms, 1,500/s 12 ms: split at 1,000 (p99 2), then 1,250 (7 ms)
    assert measured == [500.0, 1500.0, 1000.0, 1250.0]
    assert [m.rate for m in cal.mixes] == sorted(measured)
    assert sum("measuring it too" in s for s in said) == 2
    measured.clear()
    cal_mod.calibrate(plan, "monolith", (), mix_rates=(500.0, 1500.0), mix_seconds=1.0)
    assert measured == [500.0, 1500.0]  # refine=0: only what was asked


def test_the_ramps_confirming_steps_start_as_levels_do_and_last_four_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A confirming step is measured as a validation level is: after a rest (a CHECKPOINT
    on PostgreSQL), with the levels' lead-in, for CONFIRM_FACTOR times a ramp step."""
    from types import SimpleNamespace

    import pandas as pd

    from loadgen import ramp as ramp_mod
    from loadgen import validate as val
    from loadgen.record import Recorder

    events: list[tuple[str, float, float, float]] = []
    monkeypatch.setattr(val, "rest", lambda plan, say: events.append(("rest", 0, 0, 0)))
    monkeypatch.setattr(val, "server_cpu_seconds", lambda plan: None)
    monkeypatch.setattr(ramp_mod, "settle_quiet", lambda *a: 0.0)
    monkeypatch.setattr(val, "settle_quiet",
                        lambda *a: events.append(("settle", 0, 0, 0)) or 0.0)

    def fake_measure_at(plan: object, rate: float, seconds: float, tag: str,
                        lead_in_s: float = 0.0) -> ramp_mod.Step:
        events.append(("measure", rate, seconds, lead_in_s))
        rec = Recorder(0.0)
        slow = rate > 700.0 if seconds > 5.0 else rate > 800.0  # held longer, it queues
        for i in range(100):
            rec.record("bet", i / 100, i / 100 + (0.05 if slow else 0.001), None)
        rec.flush()
        res = SimpleNamespace(meta={"achieved_rate_rps": rate},
                              summary=pd.DataFrame({"error_rate": [0.0], "requests": [100]}))
        return ramp_mod.Step(rate, res, rec, seconds=seconds)  # type: ignore[arg-type]

    monkeypatch.setattr(val, "measure_at", fake_measure_at)
    steps = val.ramp(SimpleNamespace(), 100.0, 5.0, lambda s: None)  # type: ignore[arg-type]
    confirms = [e for e in events if e[0] == "measure" and e[2] > 5.0]
    assert confirms and all(e[2] == ramp_mod.CONFIRM_FACTOR * 5.0 and e[3] == val.LEAD_IN_S
                            for e in confirms)
    for i, e in enumerate(events):  # every confirming step right after a rest, and once
        if e in confirms:  # one was not held, no settle before the next one's rest
            assert events[i - 1][0] == "rest" and events[i - 2][0] != "settle"
    assert len(confirms) >= 2  # the bisection ends above 700/s: its rate was not held
    assert ramp_mod.confirmed(steps) is True
    assert 700.0 * ramp_mod.confirm_rate(1.0, len(confirms) - 1) <= ramp_mod.capacity(steps) \
        <= 700.0


def test_a_levels_cpu_against_the_calibrations_says_the_machines_drift(tmp_path: Path) -> None:
    """Session 13, monolith + PostgreSQL: the back office spent 0.80 of the calibration's CPU
    per request at the 20% level and its p50 read 0.85 of the prediction; the report says
    so beside the error, from the levels written beside the calibrated scenario."""
    import math

    import pandas as pd

    from loadgen.calibrate import calibrated_figures, write_levels
    from loadgen.cli import _calibrated
    from loadgen.validate import cpu_vs_calibration, markdown

    cal = _cal("monolith", {"serve": 0.9, "database": 0.1}, mixes=True)
    figures = calibrated_figures(cal)
    rates, cpu = figures.rates, figures.cpu_ms
    assert rates == (20.0, 60.0, 200.0)
    assert cpu[0] == pytest.approx(2 * (50 / 20 + 0.3))  # both roles together
    assert figures.reference_rps is None  # no reference window measured
    write_levels(cal, tmp_path / "cal.levels.json")
    read = _calibrated(tmp_path / "cal.yaml")
    assert (read.rates, read.cpu_ms, read.reference_rps) == (rates, cpu, None)
    assert all(math.isnan(c) for c in read.reference_cpu_ms)
    assert _calibrated(tmp_path / "other.yaml") is None  # a scenario not calibrated

    def level(rate: float, cpu_s: dict[str, float], seconds: float = 60.0) -> object:
        # the meta loadgen.run writes: CPU seconds by process and per answered request
        total = sum(cpu_s.values())
        return SimpleNamespace(meta={"server_cpu_s": cpu_s, "achieved_rate_rps": rate,
                                     "duration_s": seconds,
                                     "server_cpu_ms_per_request":
                                     1000 * total / (rate * seconds) if cpu_s else math.nan})

    # 40/s for 60 s: 2,400 requests; the calibration's 40/s lies halfway, 2 x (1.65 + 0.3)
    at_40 = (cpu[0] + cpu[1]) / 2
    half = level(40.0, {"serve:1": 2.4 * at_40 / 4, "database:2": 2.4 * at_40 / 4})
    assert cpu_vs_calibration(half, figures) == pytest.approx(0.5)  # type: ignore[arg-type]
    beyond = level(400.0, {"serve:1": 24.0 * cpu[2]})  # held at the top level beyond it
    assert cpu_vs_calibration(beyond, figures) == pytest.approx(1.0)  # type: ignore[arg-type]
    assert math.isnan(cpu_vs_calibration(half, None))  # type: ignore[arg-type]
    assert math.isnan(cpu_vs_calibration(level(40.0, {}), figures))  # type: ignore[arg-type]

    row = {"level": 0.2, "offered_rps": 40.0, "operation": "bet", "measured_requests": 2400,
           "measured_throughput_rps": 40.0, "predicted_throughput_rps": 40.0,
           "measured_p50_ms": 1.0, "predicted_p50_ms": 1.2, "error_p50_ms": 0.2,
           "measured_p99_ms": 5.0, "predicted_p99_ms": 5.0, "error_p99_ms": 0.0,
           "measured_busiest_process_util": 0.5, "predicted_busiest_cpu_util": 0.5,
           "cpu_vs_calibration": 0.8}
    fit = {"lambda": 1.0, "sigma": 0.1, "kappa": 0.0, "peak_concurrency": float("inf"),
           "peak_throughput": 10.0, "points": 3}
    text = markdown(pd.DataFrame([row]), fit, 100.0, 200.0, "monolith", "x")
    assert "- 20%: at the level 0.80" in text and "drift" in text
    text = markdown(pd.DataFrame([{**row, "reference_latency_ratio": 1.234}]), fit, 100.0,
                    200.0, "monolith", "x")
    assert "- 20%: reference latency 1.234, at the level 0.80" in text
    assert "reported only (the prediction ran as calibrated)" in text
    del row["cpu_vs_calibration"]
    assert "drift" not in markdown(pd.DataFrame([row]), fit, 100.0, 200.0, "monolith", "x")


def test_the_machine_factor_holds_a_reference_window_against_the_calibrations() -> None:
    """The reference window before a level over the median of the calibration's windows
    (those measured; the level's rate does not pick one), clamped to the range a scenario
    can be scaled by; NaN when either is unknown (no correction)."""
    import math

    from loadgen.validate import Calibrated, machine_factor
    from sim.model.scenario import MAX_MACHINE_FACTOR, MIN_MACHINE_FACTOR

    cal = Calibrated((100.0, 300.0, 500.0, 700.0), (3.0, 2.0, 1.5, 1.4), 50.0,
                     (2.0, math.nan, 3.0, 2.4))
    assert cal.reference() == 2.4  # the level without one skipped
    assert machine_factor(2.4, cal) == pytest.approx(1.0)
    assert machine_factor(1.2, cal) == pytest.approx(0.5)
    assert machine_factor(1e-3, cal) == MIN_MACHINE_FACTOR
    assert machine_factor(1e3, cal) == MAX_MACHINE_FACTOR
    for ref, figures in ((math.nan, cal), (None, cal), (2.0, None), (0.0, cal),
                         (2.0, Calibrated((100.0,), (3.0,))),
                         (2.0, Calibrated((100.0,), (3.0,), 50.0, (math.nan,)))):
        assert math.isnan(machine_factor(ref, figures))


def test_the_reference_latency_is_held_against_the_calibrations_and_only_reported() -> None:
    """A reference window's median latency over the median of the calibration's windows'
    (unclamped: a reading); NaN when either is unknown, older levels files included."""
    import math

    from loadgen.validate import Calibrated, latency_drift, machine_readings

    cal = Calibrated((100.0, 300.0, 500.0), (3.0, 2.0, 1.5), 50.0, (2.0, 2.0, 2.0),
                     (4.0, math.nan, 6.0))
    assert cal.reference_p50() == pytest.approx(5.0)
    assert latency_drift(5.0, cal) == pytest.approx(1.0)
    assert latency_drift(6.0, cal) == pytest.approx(1.2)
    assert latency_drift(50.0, cal) == pytest.approx(10.0)
    assert machine_readings({"reference_cpu_ms_per_request": 3.0, "reference_p50_ms": 6.25},
                            cal) == pytest.approx((1.5, 1.25))
    for ref, figures in ((math.nan, cal), (None, cal), (4.0, None), (0.0, cal),
                         (4.0, Calibrated((100.0,), (3.0,), 50.0, (2.0,)))):
        assert math.isnan(latency_drift(ref, figures))
    assert all(math.isnan(x) for x in machine_readings({}, cal))


def test_each_operations_measured_spread_and_a_miss_inside_it_is_marked() -> None:
    """Each operation's measured p50 and p99 get the interval of windows like the level's
    (its own requests only); a miss whose predicted figure lies inside that interval says
    so in validate.md, one outside it does not, and neither is counted a pass."""
    import pandas as pd

    from loadgen.record import RequestLog
    from loadgen.validate import (
        SPREAD_COLUMNS,
        judged_misses,
        markdown,
        measured_spread,
        with_spread,
    )

    log = RequestLog()
    for i in range(6000):  # 60 s; the win is ten times as slow as the bet
        log.add("bet", i / 100, 0.002, None)
        log.add("win", i / 100, 0.020, None)
    log.add("win", 1.0, 5.0, "timeout")  # failed: not a latency of the level
    spread = measured_spread(log).set_index("operation")
    assert list(spread.columns) == list(SPREAD_COLUMNS)
    assert spread.loc["bet", "measured_p99_hi_ms"] == pytest.approx(2.0, rel=0.03)
    assert spread.loc["win", "measured_p99_lo_ms"] == pytest.approx(20.0, rel=0.03)
    assert measured_spread(None).empty

    row = {"level": 0.5, "offered_rps": 100.0, "operation": "bet",
           "measured_throughput_rps": 60.0, "predicted_throughput_rps": 60.0,
           "measured_p50_ms": 2.0, "predicted_p50_ms": 2.0, "error_p50_ms": 0.0,
           "measured_p99_ms": 20.0, "predicted_p99_ms": 12.0, "error_p99_ms": -0.4,
           "measured_requests": 5000, "measured_busiest_process_util": 0.5,
           "predicted_busiest_cpu_util": 0.5}
    fit = {"lambda": 1.0, "sigma": 0.1, "kappa": 0.0, "peak_concurrency": float("inf"),
           "peak_throughput": 10.0, "points": 3}
    inside = with_spread(pd.DataFrame([row]), pd.DataFrame([{
        "operation": "bet", "measured_p50_lo_ms": 1.9, "measured_p50_hi_ms": 2.1,
        "measured_p99_lo_ms": 11.0, "measured_p99_hi_ms": 35.0}]))
    text = markdown(inside, fit, 100.0, 200.0, "monolith", "x")
    assert "| 20.00 (11.00–35.00) | 12.00 |" in text
    assert "**miss** (within the measured spread)" in text
    outside = inside.assign(measured_p99_lo_ms=15.0)
    assert "within the measured spread |" not in markdown(outside, fit, 100.0, 200.0,
                                                          "monolith", "x")
    assert judged_misses(inside) == judged_misses(outside) == 1
    plain = markdown(pd.DataFrame([row]), fit, 100.0, 200.0, "monolith", "x")
    assert "| 20.00 | 12.00 |" in plain and "**miss** |" in plain


def test_a_prediction_on_a_slower_machine_is_slower_by_about_its_factor() -> None:
    """A calibrated monolith + PostgreSQL at 10% of its capacity (no queueing to speak of):
    the p50 predicted on a machine 1.25 times as slow is about 1.25 times the calibrated
    one, and 0.8 times on one that much faster."""
    from loadgen.validate import predict
    from sim.model.scenario import load_scenario

    sc = load_scenario(Path(__file__).resolve().parents[2]
                       / "benchmarks/validation/session13/mpg/mpg_calibrated.yaml")
    p50 = {f: float(predict(sc, "monolith", 260.0, 10.0, 1, 0.05, f)
                    .summary.set_index("operation").loc["bet", "p50_ms"])
           for f in (0.8, 1.0, 1.25)}
    assert p50[1.25] / p50[1.0] == pytest.approx(1.25, rel=0.06)
    assert p50[0.8] / p50[1.0] == pytest.approx(0.8, rel=0.06)
