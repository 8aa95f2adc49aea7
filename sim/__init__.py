"""Discrete-event simulator of an iGaming back office deployed as a monolith, microservices
or hybrid.

For notebooks::

    import sim
    scenario = sim.load_scenario("scenarios/baseline_day.yaml", ["simulation.duration_s=60"])
    results = sim.run(scenario)          # pandas DataFrames: results.summary, .stations, ...
    results = sim.load_results("reports/baseline_day")   # a finished `testbed simulate` run
    table = sim.load_sweep("reports/baseline_day-sweep")  # a finished `testbed sweep` run
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sim.model.scenario import Scenario, ScenarioError, load_scenario, parse_scenario

if TYPE_CHECKING:
    from sim.reports.results import Results

__all__ = ["Results", "Scenario", "ScenarioError", "load_results", "load_scenario",
           "load_sweep", "parse_scenario", "run"]


def run(scenario: Scenario, **kwargs: Any) -> Results:
    """Simulate ``scenario``; see :func:`sim.runner.run` for the options."""
    from sim.runner import run as _run

    return _run(scenario, **kwargs)


def load_results(path: str) -> Results:
    """Read the results a `testbed simulate --out DIR` run wrote to ``DIR``."""
    from sim.reports.results import load_results as _load

    return _load(path)


def load_sweep(path: str) -> Any:
    """The tidy table (pandas) a `testbed sweep --out DIR` run wrote to ``DIR``."""
    from sim.sweep.table import load_sweep as _load

    return _load(path)
