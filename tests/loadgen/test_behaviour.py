"""The players' behaviour shared by the open loop and the locust users (pure, no I/O)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.behaviour import (
    MAX_OPEN_ROUNDS,
    BehaviourError,
    Players,
    Request,
    error_code,
)
from sim.model.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = load_scenario(ROOT / "scenarios" / "baseline_day.yaml")


def _answer_all(players: Players, n: int) -> list[Request]:
    out = []
    for _ in range(n):
        req = players.next()
        players.answered(req, 200)
        out.append(req)
    return out


def test_operation_mix_follows_the_scenario() -> None:
    players = Players(SCENARIO, 100, "t-", seed=3)
    reqs = _answer_all(players, 20_000)
    seen = Counter(r.operation for r in reqs)
    weights = {n: o.weight for n, o in SCENARIO.operations.items()}
    total = sum(weights.values())
    for op in ("balance", "bet", "win", "deposit"):
        share = seen[op] / len(reqs)
        assert share == pytest.approx(weights[op] / total, abs=0.015), (op, share)


def test_every_money_request_has_a_fresh_transaction_id() -> None:
    players = Players(SCENARIO, 10, "t-", seed=1)
    ids = [orjson.loads(r.body)["transaction_id"] for r in _answer_all(players, 5000)
           if r.method == "POST" and r.operation != "login"]
    assert len(ids) == len(set(ids)) > 1000


def test_wins_and_rollbacks_settle_rounds_whose_bet_was_answered() -> None:
    players = Players(SCENARIO, 5, "t-", seed=2)
    opened: dict[str, dict[str, object]] = {}
    for _ in range(3000):
        req = players.next()
        body = orjson.loads(req.body) if req.body else {}
        if req.operation == "bet":
            assert req.opens is not None and req.opens.round_id == body["round_id"]
            players.answered(req, 200)
            opened[body["round_id"]] = body
        elif req.operation in ("win", "rollback"):
            bet = opened.pop(body["round_id"])  # KeyError: a round that was never opened
            assert bet["player_id"] == body["player_id"]
            if req.operation == "rollback":
                assert body["rolled_back_transaction_id"] == bet["transaction_id"]


def test_a_refused_bet_opens_no_round() -> None:
    players = Players(SCENARIO, 1, "t-", seed=1)
    bet = players.request("bet")
    players.answered(bet, 409)
    assert not players.open_rounds
    assert players.request("win").operation == "bet"  # nothing to settle: a bet instead


def test_open_rounds_are_bounded_and_abandonment_counted() -> None:
    players = Players(SCENARIO, 1, "t-", seed=1)
    for _ in range(MAX_OPEN_ROUNDS + 5):
        players.answered(players.request("bet"), 200)
    assert len(players.open_rounds) == MAX_OPEN_ROUNDS
    assert players.abandoned_rounds == 5


def test_whales_act_more_often() -> None:
    sc = load_scenario(ROOT / "scenarios" / "baseline_day.yaml",
                       ["population.whales.share=0.1", "population.whales.activity_multiplier=10"])
    players = Players(sc, 100, "t-", seed=5)
    picks = Counter(players.player() for _ in range(20_000))
    whale_share = sum(n for p, n in picks.items() if int(p.split("p")[-1]) < 10) / 20_000
    assert whale_share == pytest.approx(100 / 190, abs=0.02)  # 10 whales x10 vs 90 others


def test_setup_creates_then_funds_each_player() -> None:
    players = Players(SCENARIO, 3, "t-", seed=1)
    chains = players.setup_requests()
    assert [r.path for r in chains[0]] == ["/players", "/players/t-p0/deposits"]
    assert all(orjson.loads(c[1].body)["amount"] > 0 for c in chains)


def test_stakes_follow_the_bet_size_distribution() -> None:
    players = Players(SCENARIO, 1, "t-", seed=1)
    stakes = sorted(players.stake() for _ in range(10_000))
    bs = SCENARIO.population.bet_size
    assert bs.min <= stakes[0] and stakes[-1] <= bs.max
    assert stakes[len(stakes) // 2] == pytest.approx(bs.median, rel=0.1)


def test_unsupported_operation_is_refused_with_its_name() -> None:
    raw = SCENARIO.model_dump(mode="json", by_alias=True)
    raw["operations"]["jackpot_spin"] = {
        "weight": 0.1, "steps": [{"component": "wallet", "cpu": "wallet_cpu"}]}
    sc = parse_scenario(raw)
    with pytest.raises(BehaviourError, match="jackpot_spin"):
        Players(sc, 1, "t-", seed=1)


@given(st.integers(200, 299), st.binary(max_size=50))
def test_error_code_is_none_on_success(status: int, body: bytes) -> None:
    assert error_code(status, body) is None


@given(st.integers(400, 599))
def test_error_code_reads_the_api_error_or_names_the_status(status: int) -> None:
    body = orjson.dumps({"error": {"code": "INSUFFICIENT_FUNDS", "message": "x"}})
    assert error_code(status, body) == "INSUFFICIENT_FUNDS"
    assert error_code(status, b"<html>") == f"HTTP_{status}"
