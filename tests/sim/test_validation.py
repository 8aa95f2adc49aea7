"""The engine against queueing theory (the same cases as `testbed validate --analytic`)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sim.analysis.validate import cases, evaluate


def _subset(names: tuple[str, ...], quick: bool = True) -> list:
    return [c for c in cases(quick=quick) if c.name.startswith(names)]


def test_mmc_and_mva_at_moderate_load_match_theory() -> None:
    table = evaluate(_subset(("M/M/1 rho=0.5", "M/M/8 rho=0.8", "closed MVA N=5",
                              "Jackson 3 stations rho=0.5")), jobs=2)
    assert len(table) == 9  # 7 means + the p99 of the wait of M/M/1 and M/M/8
    assert set(table[table["metric"].str.startswith("wait p")]["metric"]) == {"wait p99 (ms)"}
    failed = table[~table["pass"]]
    assert failed.empty, failed.to_string()


@pytest.mark.slow
@pytest.mark.heavy
def test_high_utilisation_cases_match_theory() -> None:
    table = evaluate(_subset(("M/M/1 rho=0.8", "M/M/8 rho=0.95", "closed MVA N=20",
                              "closed MVA N=40")), jobs=2)
    failed = table[~table["pass"]]
    assert failed.empty, failed.to_string()


def test_validation_fails_loudly_when_the_engine_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    # make the formula wrong by 10%: the comparison must flag it
    cs = _subset(("M/M/1 rho=0.5",))
    wrong = [c.__class__(c.name, c.metric, c.expected * 1.10, c.scenario, c.read) for c in cs]
    table = evaluate(wrong, jobs=2)
    assert not table["pass"].any()


def test_validate_requires_a_reference() -> None:
    from testbed.cli import cli

    res = CliRunner().invoke(cli, ["validate"])
    assert res.exit_code == 2
    assert "--analytic" in res.output


def test_suite_has_wait_percentile_and_long_processor_sharing_cases() -> None:
    metrics = {(c.name, c.metric) for c in cases(quick=True)}
    assert ("M/M/1 rho=0.8", "wait p50 (ms)") in metrics
    assert ("M/M/8 rho=0.95", "wait p99 (ms)") in metrics
    long_ps = [c for c in cases(quick=True) if c.name.startswith("M/M/1-PS")]
    assert long_ps and long_ps[0].scenario.simulation.duration_s > 2**14


def test_language_cases_match_theory() -> None:
    """Nested calls, branch, cache, read replicas, explicit rate and mixed workloads, small."""
    from sim.analysis.validate_language import language_cases

    table = evaluate(language_cases(0.05, seed=7), jobs=2)
    assert len(table) == 10
    failed = table[~table["pass"]]
    assert failed.empty, failed.to_string()


@pytest.mark.slow
@pytest.mark.heavy
def test_language_cases_match_theory_at_validation_scale() -> None:
    from sim.analysis.validate_language import language_cases

    table = evaluate(language_cases(0.15, seed=7), jobs=2)
    failed = table[~table["pass"]]
    assert failed.empty, failed.to_string()


def test_contention_cases_match_theory() -> None:
    """Locked rows (hot account, player) against M/G/1 and M/M/1, optimistic aborts against
    the dead-time formula: the contention cases of `testbed validate --analytic`."""
    from sim.analysis.validate_contention import contention_cases

    table = evaluate(contention_cases(0.1, seed=7), jobs=2)
    print("\n" + table.to_string())
    assert len(table) == 4
    assert table["pass"].all(), table[~table["pass"]].to_string()
def test_host_and_load_dependent_cpu_cases_match_theory() -> None:
    """Host background, roomy host, generator on the host, cpu_by_rate flat and sloped."""
    from sim.analysis.validate_host import host_cases

    table = evaluate(host_cases(0.05, seed=7), jobs=2)
    assert len(table) == 5
    failed = table[~table["pass"]]
    assert failed.empty, failed.to_string()
