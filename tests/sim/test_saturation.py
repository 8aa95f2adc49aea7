"""Saturation is never silent: offered utilisation before the run, queue growth after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from sim.analysis.saturation import is_growing, queue_growth
from sim.model.load import offered_load
from sim.model.scenario import Scenario, parse_scenario
from sim.reports.report import summary_paragraph
from sim.runner import run
from testbed.cli import cli

SERVICE_MS = 10.0


def _open(raw: dict[str, Any], lam: float) -> dict[str, Any]:
    """Flat Poisson arrivals at ``lam`` per second (1000 players always online)."""
    raw["population"] = {"registered_players": 1000, "peak_online": 1000,
                         "online_curve": [1.0] * 24, "whales": {"share": 0.0},
                         "session": {"actions_per_minute": 60.0 * lam / 1000}}
    return raw


def mg1(rho: float, seed: int = 1, duration: float = 60.0, reps: int = 3) -> Scenario:
    """M/G/1: one worker on one core, log-normal service of mean ~10 ms."""
    sigma = 0.8
    median = SERVICE_MS / np.exp(sigma**2 / 2)
    raw = _open({
        "name": f"mg1_rho{rho}",
        "simulation": {"duration_s": duration, "replications": reps, "seed": seed},
        "demands": {"work": {"kind": "lognormal", "median_ms": median, "sigma": sigma}},
        "operations": {"job": {"weight": 1, "steps": [{"component": "q", "cpu": "work"}]}},
        "deployments": [{"name": "mg1", "kind": "monolith",
                         "services": [{"name": "q", "components": ["q"], "workers": 1,
                                       "cores": 1}]}],
    }, rho * 1000.0 / SERVICE_MS)
    return parse_scenario(raw, raw["name"])


def database(load: float, seed: int = 1, duration: float = 60.0) -> Scenario:
    """A database of 2 cores offered ``load`` times its capacity by 4 app replicas."""
    db_ms = 4.0
    lam = load * 2 * 1000.0 / db_ms
    raw = _open({
        "name": f"db_x{load}",
        "simulation": {"duration_s": duration, "replications": 3, "seed": seed},
        "demands": {"cpu": {"kind": "exponential", "mean_ms": 0.5},
                    "db": {"kind": "exponential", "mean_ms": db_ms}},
        "operations": {"bet": {"weight": 1, "steps": [
            {"component": "wallet", "cpu": "cpu", "db": "db"}]}},
        "deployments": [{"name": "mono", "kind": "monolith",
                         "services": [{"name": "app", "components": ["wallet"], "replicas": 4,
                                       "workers": 256, "cores": 4, "db_pool": 16,
                                       "database": "main"}],
                         "databases": [{"name": "main", "cores": 2}]}],
    }, lam)
    return parse_scenario(raw, raw["name"])


def _offered(scen: Scenario, station: str) -> float:
    return next(o.utilisation for o in offered_load(scen) if o.station == station)


def test_offered_utilisation_of_an_mg1_is_lambda_times_demand() -> None:
    scen = mg1(1.5)
    assert _offered(scen, "q[*].cpu") == pytest.approx(1.5, rel=1e-9)
    assert _offered(scen, "q[*].workers") == pytest.approx(1.5, rel=1e-9)
    assert _offered(mg1(0.9), "q[*].cpu") == pytest.approx(0.9, rel=1e-9)


def test_offered_utilisation_takes_the_peak_of_the_day_and_spikes() -> None:
    raw = {"name": "t", "simulation": {"duration_s": 600, "start_hour": 0},
           "population": {"registered_players": 1000, "peak_online": 1000,
                          "online_curve": [0.5] * 24, "session": {"actions_per_minute": 6},
                          "spikes": [{"start_s": 300, "duration_s": 60, "multiplier": 3,
                                      "operations": ["a"]}]},
           "demands": {"w": {"kind": "constant", "value_ms": 10}},
           "operations": {"a": {"weight": 1, "steps": [{"component": "x", "cpu": "w"}]},
                          "b": {"weight": 1, "steps": [{"component": "x", "cpu": "w"}]}},
           "deployments": [{"name": "d", "kind": "monolith",
                            "services": [{"name": "s", "components": ["x"], "cores": 1,
                                          "workers": 4, "replicas": 2}]}]}
    load = next(o for o in offered_load(parse_scenario(raw)) if o.station == "s[*].cpu")
    # 500 online x 0.1/s = 50/s, half of it tripled in the spike: 100/s x 10 ms / 2 replicas
    assert load.utilisation == pytest.approx(0.5)
    assert 300 <= load.at_s <= 360


def test_trend_statistic_separates_a_rising_queue_from_noise() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(600)
    assert queue_growth(0.5 * t + rng.normal(0, 20, 600), 600.0) == pytest.approx(300, rel=0.1)
    flat = [queue_growth(rng.exponential(5.0, 600), 600.0) for _ in range(3)]
    assert not is_growing(flat, [5.0] * 3)
    assert is_growing([290.0, 310.0, 305.0], [150.0] * 3)
    assert not is_growing([2.0, -1.0, 0.5], [8.0] * 3)


def _flags(res: Any) -> tuple[list[str], list[str]]:
    sat = res.meta["saturation"]
    return ([o["station"] for o in sat["saturated_before_run"]],
            [g["station"] for g in sat["growing_after_run"]])


@pytest.mark.slow
def test_mg1_at_rho_15_is_flagged_before_and_after_the_run() -> None:
    res = run(mg1(1.5), jobs=1)
    before, after = _flags(res)
    assert "q[*].cpu" in before and "q[*].workers" in before
    assert "q[0].workers" in after
    assert res.meta["saturation"]["unstable"]
    assert summary_paragraph(res).startswith("**Unstable: figures grow with the run length.**")


@pytest.mark.slow
def test_database_at_13_times_capacity_is_flagged_before_and_after_the_run() -> None:
    res = run(database(1.3), jobs=1)
    before, after = _flags(res)
    assert before == ["main[*].cpu"]
    assert after, res.stations[["station", "mean_queue", "queue_growth"]]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_stable_mg1_at_rho_09_raises_no_alarm(seed: int) -> None:
    res = run(mg1(0.9, seed=seed), jobs=1)
    assert _flags(res) == ([], []), res.stations[["station", "mean_queue", "queue_growth",
                                                  "queue_growth_ci"]]
    assert not res.meta["saturation"]["unstable"]


def test_database_below_capacity_is_not_flagged_before() -> None:
    assert all(not o.saturated for o in offered_load(database(0.8)))


def test_cli_warns_and_strict_refuses_with_exit_3(tmp_path: Path) -> None:
    scen = mg1(1.5)
    path = tmp_path / "mg1.yaml"
    path.write_text(yaml.safe_dump(scen.model_dump(mode="json", by_alias=True,
                                                   exclude_none=True)))
    res = CliRunner().invoke(cli, ["simulate", str(path), "--strict", "--no-progress",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 3, res.output
    assert "saturated before the run: mg1: q[*].cpu" in res.output
    assert "refusing" in res.output
    assert not (tmp_path / "out").exists()

