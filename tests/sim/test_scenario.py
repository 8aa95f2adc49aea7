"""Scenario language: shipped files load; bad files and overrides name file, field, reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sim.model.scenario import ScenarioError, apply_override, load_scenario, parse_scenario
from testbed.cli import cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))


def _raw(name: str = "baseline_day.yaml") -> dict:
    return yaml.safe_load((ROOT / "scenarios" / name).read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_load_with_three_architectures(path: Path) -> None:
    scen = load_scenario(path)
    assert {d.kind for d in scen.deployments} == {"monolith", "microservices", "hybrid"}


def test_override_by_list_item_name_and_index() -> None:
    raw = _raw()
    apply_override(raw, "deployments.monolith.services.app.replicas=12")
    apply_override(raw, "deployments.1.services.0.workers=99")
    apply_override(raw, "population.peak_online=1000")
    scen = parse_scenario(raw)
    assert scen.deployments[0].services[0].replicas == 12
    assert scen.deployments[1].services[0].workers == 99
    assert scen.population.peak_online == 1000


@pytest.mark.parametrize(
    ("override", "field", "reason"),
    [
        ("deployments.monolith.services.app.replicas=0", "deployments[0].services[0].replicas",
         "greater than or equal to 1"),
        ("population.peak_online=-5", "population.peak_online", "greater than 0"),
        ("demands.wallet_db.kind=weibull", "demands.wallet_db", "weibull"),
        ("simulation.duration_s=abc", "simulation.duration_s", "valid number"),
        ("operations.bet.steps.0.cpu=nonexistent", "operations.bet.steps[0].cpu",
         "unknown demand 'nonexistent'"),
        ("deployments.nosuch.replicas=3", "deployments.nosuch", "no list item named"),
        ("population.bogus_field=1", "population.bogus_field", "Extra inputs"),
    ],
)
def test_bad_overrides_name_file_field_and_reason(override: str, field: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        load_scenario(ROOT / "scenarios" / "baseline_day.yaml", [override])
    msg = str(exc.value)
    assert "baseline_day.yaml" in msg or "--set" in msg
    assert field in msg
    assert reason in msg


def test_component_without_service_is_reported() -> None:
    raw = _raw()
    raw["deployments"][2]["services"][1]["components"] = ["fraud"]  # hybrid loses analytics
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(raw, "x.yaml")
    assert "deployments[2] (hybrid): no service hosts component 'analytics'" in str(exc.value)


def test_pool_larger_than_database_connections_is_reported() -> None:
    raw = _raw()
    raw["deployments"][0]["databases"][0]["max_connections"] = 10
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(raw, "x.yaml")
    assert "max_connections" in str(exc.value)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read file"):
        load_scenario(tmp_path / "missing.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(top)


def test_cli_exits_2_with_one_message_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, [
        "simulate", str(ROOT / "scenarios" / "baseline_day.yaml"), "--out", str(out),
        "--set", "deployments.hybrid.services.core.cores=0", "--no-progress",
    ])
    assert res.exit_code == 2
    assert "baseline_day.yaml" in res.output
    assert "deployments[2].services[0].cores" in res.output
    assert not out.exists()


def test_cli_bad_precision_flag_exits_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, [
        "simulate", str(ROOT / "scenarios" / "baseline_day.yaml"), "--precision", "150%",
        "--out", str(tmp_path / "o"),
    ])
    assert res.exit_code == 2
    assert "--precision" in res.output


def test_help_teaches() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0 and "simulate" in res.output and "validate" in res.output
    res = CliRunner().invoke(cli, ["simulate", "--help"])
    assert res.exit_code == 0
    for word in ("--set", "--precision", "--reduce", "--seed", "Examples"):
        assert word in res.output


def _walk(steps: list) -> list:
    out = []
    for s in steps:
        out.append(s)
        out += _walk(s.calls)
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_evaluate_fraud_rules_as_the_back_office_does(path: Path) -> None:
    # reference_impl/services/wallet.py runs the rules (RulesGate) inside the wallet's money
    # transaction; the fraud service only consumes the events: never a synchronous fraud hop
    scen = load_scenario(path)
    for name, op in scen.operations.items():
        for step in _walk(op.steps):
            if step.component == "fraud":
                assert step.mode == "async", (path.name, name)
    for op in ("deposit", "withdrawal"):
        if op not in scen.operations:  # a scenario about other traffic (retry_storm)
            continue
        comps = [(s.component, s.mode) for s in _walk(scen.operations[op].steps)]
        assert ("fraud", "async") in comps, (path.name, op)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_cite_only_the_projects_own_files(path: Path) -> None:
    # every demand figure has a source in the project; no comment points outside it
    text = path.read_text()
    assert "../" not in text and "public hot-spot benchmark" not in text
    raw = yaml.safe_load(text)
    lines = text.splitlines()
    for name in raw["demands"]:
        i = next(i for i, ln in enumerate(lines) if ln.strip().startswith(f"{name}:"))
        assert "#" in lines[i] or lines[i - 1].strip().startswith("#"), \
            f"{path.name}: demand {name} has no source comment"
    for cited in re.findall(r"[\w/]+\.(?:md|py|yaml)", text):
        if "/" in cited:
            assert (ROOT / cited).exists(), f"{path.name} cites {cited}, not in the project"
