"""The rules file: the packaged defaults load, and bad files fail with index, field, reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reference_impl.rules import RulesEngine, RulesFileError, load_rules
from reference_impl.rules.model import DEFAULT_RULES_PATH


def default_raw() -> dict:
    return yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def test_default_rules_load_and_cover_the_domain() -> None:
    engine = RulesEngine.from_yaml()
    assert engine.version == default_raw()["version"]
    codes = {r.reason_code for r in engine.rules}
    assert {
        "SELF_EXCLUDED", "TIMED_OUT", "DEPOSIT_LIMIT", "LOSS_LIMIT", "WAGER_LIMIT",
        "LOW_WAGERING", "UNVERIFIED_IDENTITY", "DEPOSIT_VELOCITY", "MANY_INSTRUMENTS",
        "DECLINED_DEPOSITS", "LARGE_DEPOSIT", "LARGE_STAKE", "SHARED_INSTRUMENT",
        "SHARED_DEVICE", "LINKED_TO_EXCLUDED",
    } <= codes
    for rule in engine.rules:
        if rule.kind == "sync":
            assert not {"win", "rollback"} & set(rule.applies_to)


def test_explicit_path_equals_default(tmp_path: Path) -> None:
    assert load_rules(write(tmp_path, default_raw())) == load_rules(None)


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: r["rules"][3]["aggregate"].update(fn="median"),
     ["rules[3]", "rg-loss-limit-v1", "aggregate.fn", "median"]),
    (lambda r: r["rules"][7]["aggregate"].update(window_s=-5),
     ["rules[7].aggregate.window_s", "greater than 0"]),
    (lambda r: r["rules"][2].update(outcome="maybe"), ["rules[2].outcome"]),
    (lambda r: r["rules"][4].pop("reason_code"), ["rules[4].reason_code", "required"]),
    (lambda r: r["rules"][5]["compare"].update(thresholds=[]), ["rules[5].compare.thresholds"]),
    (lambda r: r["rules"][1].update(applies_to=["win"]), ["rules[1]", "applies_to"]),
    (lambda r: r["rules"][9].update(colour="red"), ["rules[9].colour", "Extra inputs"]),
    (lambda r: r["rules"][10].pop("baseline"), ["rules[10]", "baseline"]),
    (lambda r: r["rules"][2].pop("code"), ["rules[2]", "code"]),
    (lambda r: r["rules"][6]["when"][0].update(field="stakes"), ["rules[6]", "when[0].field"]),
    (lambda r: r["rules"].append(dict(r["rules"][0])), ["rules[17].id", "duplicate"]),
    (lambda r: r.pop("version"), ["version", "required"]),
])
def test_bad_rules_file_names_index_field_and_reason(tmp_path: Path, mutate, expected) -> None:
    raw = default_raw()
    mutate(raw)
    path = write(tmp_path, raw)
    with pytest.raises(RulesFileError) as err:
        RulesEngine.from_yaml(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, message


def test_bare_on_key_gets_a_hint(tmp_path: Path) -> None:
    raw = default_raw()
    raw["rules"][2][True] = raw["rules"][2].pop("applies_to")  # what YAML makes of `on:`
    with pytest.raises(RulesFileError, match=r"rules\[2\].*applies_to"):
        load_rules(write(tmp_path, raw))


def test_invalid_yaml_is_a_rules_file_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: [unclosed\n", encoding="utf-8")
    with pytest.raises(RulesFileError, match="not valid YAML"):
        load_rules(path)


def test_disabled_rule_does_not_fire(tmp_path: Path) -> None:
    from reference_impl.rules import LimitsState, Usage

    raw = default_raw()
    state = LimitsState(self_exclusion_until=100.0)
    assert not RulesEngine.from_yaml(write(tmp_path, raw)).check_login(state, 0.0).allowed
    raw["rules"][0]["enabled"] = False
    engine = RulesEngine.from_yaml(write(tmp_path, raw))
    assert engine.check_login(state, 0.0).allowed
    assert engine.check_bet(state, Usage.zero(), 1, 0.0).allowed
