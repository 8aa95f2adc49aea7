"""Every number of the scenario language is finite and in a sensible range; bad ones exit 2.

Walks every numeric field of every shipped scenario and puts inf, -inf, nan and absurd
magnitudes in it: each must be refused with a :class:`ScenarioError` naming the file and
the field. The issue's command-line cases run through the real CLI (exit 2, file, field).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.model import limits
from sim.model.scenario import ScenarioError, load_scenario, parse_scenario
from testbed.cli import cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
BAD = [math.inf, -math.inf, math.nan, 1e300, -1e300]


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every int/float leaf (bools excluded) of a raw YAML mapping."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))]
    if isinstance(node, int | float) and not isinstance(node, bool):
        return [path]
    return []


def _label(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _set(raw: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    node: Any = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return raw


def _names_field(err: ScenarioError, path: tuple[Any, ...]) -> bool:
    """Some problem is about the field, or a container or model holding it."""
    label = _label(path)
    for where, _ in err.problems:
        if where and (label == where or label.startswith((where + ".", where + "["))):
            return True
    return False


RAWS = {p.name: yaml.safe_load(p.read_text()) for p in SHIPPED}
CASES = [(name, path) for name, raw in RAWS.items() for path in _leaves(raw)]


def test_every_shipped_scenario_has_numeric_fields_to_check() -> None:
    assert len(CASES) > 150
    assert all(any(n == name for n, _ in CASES) for name in RAWS)


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}:{_label(p)}" for n, p in CASES])
def test_non_finite_and_absurd_numbers_are_refused_naming_the_field(
        name: str, path: tuple[Any, ...]) -> None:
    for bad in BAD:
        with pytest.raises(ScenarioError) as exc:
            parse_scenario(_set(RAWS[name], path, bad), name)
        assert _names_field(exc.value, path), (bad, str(exc.value))
        assert str(exc.value).startswith(name)


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(CASES),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.integers(min_value=-10**30, max_value=10**30)))
def test_any_number_anywhere_is_accepted_in_range_or_refused_naming_the_field(
        case: tuple[str, tuple[Any, ...]], value: float) -> None:
    name, path = case
    try:
        scen = parse_scenario(_set(RAWS[name], path, value), name)
    except ScenarioError as err:
        assert _names_field(err, path) or any(w == "" or "." not in w for w, _ in err.problems), (
            str(err))
        return
    # accepted: every number of the validated scenario is finite and the value within bounds
    dumped = scen.model_dump()
    for p in _leaves(dumped):
        v = dumped
        for part in p:
            v = v[part]
        assert math.isfinite(v), (_label(p), v)
    assert abs(float(value)) <= max(limits.MAX_PLAYERS, limits.MAX_SEED)


def _simulate(*args: str) -> Any:
    return CliRunner().invoke(cli, ["simulate", str(ROOT / "scenarios" / "baseline_day.yaml"),
                                    "--no-progress", "--no-report", *args])


@pytest.mark.parametrize(
    ("args", "field", "reason"),
    [
        (["--set", "simulation.duration_s=.inf"], "simulation.duration_s", "finite number"),
        (["--set", "simulation.duration_s=1e300"], "simulation.duration_s", "less than or equal"),
        (["--set", "population.session.actions_per_minute=.inf"],
         "population.session.actions_per_minute", "finite number"),
        (["--set", "simulation.timeseries_bin_s=.inf"], "simulation.timeseries_bin_s",
         "finite number"),
        (["--set", "simulation.timeseries_bin_s=1e-9"], "simulation.timeseries_bin_s",
         "greater than or equal"),
        (["--set", "demands.wallet_cpu.mean_ms=.inf"], "demands.wallet_cpu.mean_ms",
         "finite number"),
        (["--set", "demands.wallet_db.sigma=.nan"], "demands.wallet_db.sigma", "finite number"),
        (["--set", "simulation.warmup=.nan"], "simulation.warmup", "finite number"),
        (["--set", "simulation.warmup=1000"], "simulation", "shorter than duration_s"),
        (["--set", "deployments.monolith.services.app.replicas=1e300"],
         "deployments[0].services[0].replicas", "valid integer"),
        (["--set", "deployments.monolith.services.app.replicas=100000"],
         "deployments[0].services[0].replicas", "less than or equal to 10000"),
        (["--set", "population.spikes=[{start_s: 0, duration_s: .inf, multiplier: 2}]"],
         "population.spikes[0].duration_s", "finite number"),
        (["--set", "deployments.nosuch.replicas=3"], "deployments.nosuch", "no list item"),
    ],
)
def test_cli_overrides_exit_2_naming_file_field_and_reason(
        args: list[str], field: str, reason: str) -> None:
    res = _simulate(*args)
    assert res.exit_code == 2, res.output
    assert "baseline_day.yaml" in res.output
    assert f": {field}: " in res.output or f": {field}." in res.output, res.output
    assert reason in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e300", "0", "-1"])
def test_cli_duration_flag_refuses_non_finite_and_out_of_range(value: str) -> None:
    res = _simulate("--duration", value)
    assert res.exit_code == 2, res.output
    assert "--duration" in res.output
    assert "Traceback" not in res.output


def test_a_file_with_an_infinite_demand_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    raw = copy.deepcopy(RAWS["baseline_day.yaml"])
    raw["demands"]["wallet_cpu"] = {"kind": "exponential", "mean_ms": math.inf}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(cli, ["simulate", str(path), "--no-progress", "--no-report"])
    assert res.exit_code == 2
    assert f"{path}: demands.wallet_cpu.mean_ms: Input should be a finite number" in res.output


def test_override_errors_name_the_scenario_file() -> None:
    with pytest.raises(ScenarioError) as exc:
        load_scenario(ROOT / "scenarios" / "cup_final.yaml", ["deployments.9.replicas=1"])
    assert "cup_final.yaml" in exc.value.source and "--set" in exc.value.source


def test_a_whole_day_is_within_range_and_a_week_is_the_limit() -> None:
    path = ROOT / "scenarios" / "baseline_day.yaml"
    assert load_scenario(path, ["simulation.duration_s=86400"]).simulation.duration_s == 86_400
    with pytest.raises(ScenarioError, match="less than or equal to 604800"):
        load_scenario(path, [f"simulation.duration_s={limits.MAX_DURATION_S + 1}"])
