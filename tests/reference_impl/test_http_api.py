"""The public API end to end on a real server (SQLite): every endpoint and error code."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reference_impl.http.guard import EdgeConfig
from reference_impl.services.backoffice import BackOfficeConfig
from tests.reference_impl.http_server import running_server, sample, signed, write_credentials


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A signed client (provider, operator and staff credentials) of a server that checks
    them."""
    folder = Path(tmp_path_factory.mktemp("api"))
    creds = write_credentials(folder)
    with running_server(BackOfficeConfig(db=f"sqlite:///{folder / 'wallet.db'}",
                                         house_shards=2),
                        EdgeConfig(credentials=str(creds))) as url, \
            httpx.Client(base_url=url, timeout=10, auth=signed(creds)) as client:
        yield client


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def _player(api: httpx.Client, pid: str, deposit: int = 0) -> None:
    r = api.post("/players", json={"player_id": pid, "currency": "EUR"})
    assert r.status_code == 201 and r.json() == {"player_id": pid, "currency": "EUR", "balance": 0}
    if deposit:
        r = api.post(f"/players/{pid}/deposits", json={"transaction_id": f"dep-{pid}",
                                                        "amount": deposit})
        assert r.json()["balance"] == deposit


def _bet(api: httpx.Client, tid: str, pid: str, amount: int, rnd: str = "r1") -> httpx.Response:
    return api.post("/wallet/bet", json={"transaction_id": tid, "player_id": pid,
                                         "round_id": rnd, "game_id": "slot-1", "amount": amount})


def test_round_trip_replays_and_errors(api: httpx.Client) -> None:
    _player(api, "alice", 1_000)
    _error(api.post("/players", json={"player_id": "alice", "currency": "USD"}), 409,
           "PLAYER_EXISTS")
    again = api.post("/players", json={"player_id": "alice", "currency": "EUR"})  # a retry
    assert again.json() == {"player_id": "alice", "currency": "EUR", "balance": 0}
    assert _bet(api, "a-b1", "alice", 300).json()["balance"] == 700
    assert _bet(api, "a-b1", "alice", 300).json()["balance"] == 700  # replay
    _error(_bet(api, "a-b1", "alice", 301), 409, "TRANSACTION_CONFLICT")
    _error(_bet(api, "a-b2", "alice", 5_000), 409, "INSUFFICIENT_FUNDS")
    _error(_bet(api, "a-b3", "ghost", 5), 404, "UNKNOWN_PLAYER")
    r = api.post("/wallet/win", json={"transaction_id": "a-w1", "player_id": "alice",
                                      "round_id": "r1", "amount": 900})
    assert r.json() == {"transaction_id": "a-w1", "status": "ok", "balance": 1_600,
                        "currency": "EUR"}
    _error(api.post("/wallet/win", json={"transaction_id": "a-w2", "player_id": "alice",
                                         "round_id": "r1", "amount": 1}), 409,
           "BET_ALREADY_SETTLED")
    _error(api.post("/wallet/win", json={"transaction_id": "a-w3", "player_id": "alice",
                                         "round_id": "nope", "amount": 1}), 404, "BET_NOT_FOUND")
    rb = {"transaction_id": "a-rb", "player_id": "alice", "round_id": "r9",
          "rolled_back_transaction_id": "a-late"}
    assert api.post("/wallet/rollback", json=rb).json()["balance"] == 1_600
    _error(_bet(api, "a-late", "alice", 10, "r9"), 409, "TRANSACTION_ROLLED_BACK")
    _error(api.post("/players/alice/deposits", json={"transaction_id": "a-d2", "amount": 5,
                                                      "currency": "USD"}), 409,
           "CURRENCY_MISMATCH")
    assert api.get("/players/alice/balance").json() == {"player_id": "alice", "balance": 1_600,
                                                        "currency": "EUR"}
    page = api.get("/players/alice/transactions", params={"limit": 2}).json()
    assert [e["transaction_id"] for e in page["entries"]] == [  # scoped by caller
        "demo-provider:a-w1", "demo-provider:a-b1"]
    rest = api.get("/players/alice/transactions",
                   params={"before": page["next_before"]}).json()
    assert [e["transaction_id"] for e in rest["entries"]] == ["platform:dep-alice"]
    audit = api.get("/audit/verify").json()
    assert audit["ok"] is True and audit["first_violation"] is None


@pytest.mark.parametrize("body", [
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": 1.5},
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": 1e300},
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": "5"},
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": 0},
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": True},
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "amount": 5},
    {"transaction_id": "x|y", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": 5},
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": 5,
     "extra": 1},
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": 5,
     "jackpot_bp": 10_001},
    {"transaction_id": "x", "player_id": "bob", "round_id": "r", "game_id": "g", "amount": 5,
     "jackpot_bp": 0.5},
])
def test_bad_bodies_are_validation_errors(api: httpx.Client, body: dict[str, object]) -> None:
    _error(api.post("/wallet/bet", json=body), 400, "VALIDATION_ERROR")


def test_jackpot_share_of_a_stake_feeds_the_pool(api: httpx.Client) -> None:
    _player(api, "jack", 10_000)
    pool_before = api.get("/audit/verify").json()["totals"]["EUR"].get("jackpot", 0)
    body = {"transaction_id": "j-b1", "player_id": "jack", "round_id": "jr1", "game_id": "g",
            "amount": 2_000, "jackpot_bp": 250}
    assert api.post("/wallet/bet", json=body).json()["balance"] == 8_000
    entries = api.get("/players/jack/transactions").json()["entries"]
    legs = sorted((e["credit_account"].split(":")[0], e["amount"]) for e in entries
                  if e["transaction_id"] == "demo-provider:j-b1")
    assert legs == [("house", 1_950), ("jackpot", 50)]
    audit = api.get("/audit/verify").json()
    assert audit["ok"] and audit["totals"]["EUR"]["jackpot"] == pool_before + 50
    r = api.post("/wallet/rollback", json={"transaction_id": "j-rb1", "player_id": "jack",
                                           "round_id": "jr1", "rolled_back_transaction_id":
                                           "j-b1"})
    assert r.json()["balance"] == 10_000
    assert api.get("/audit/verify").json()["totals"]["EUR"]["jackpot"] == pool_before


def test_not_json_and_unknown_route(api: httpx.Client) -> None:
    _error(api.post("/wallet/bet", content=b"{nope",
                    headers={"content-type": "application/json"}), 400, "VALIDATION_ERROR")
    _error(api.get("/nowhere"), 404, "NOT_FOUND")


def test_limits_and_self_exclusion_block_bets_but_not_wins(api: httpx.Client) -> None:
    _player(api, "carol", 1_000)
    assert _bet(api, "c-b1", "carol", 100).status_code == 200
    limits = api.put("/players/carol/limits", json={"wager": {"24h": 150}}).json()
    assert limits["wager"]["24h"] == 150
    _error(_bet(api, "c-b2", "carol", 60), 403, "LIMIT_EXCEEDED")
    assert _bet(api, "c-b3", "carol", 50).status_code == 200
    until = time.time() + 3_600
    api.put("/players/carol/limits", json={"self_exclusion_until": until})
    _error(_bet(api, "c-b4", "carol", 1, "r2"), 403, "PLAYER_BLOCKED")
    _error(api.post("/players/carol/deposits", json={"transaction_id": "c-d", "amount": 5}),
           403, "PLAYER_BLOCKED")
    win = api.post("/wallet/win", json={"transaction_id": "c-w", "player_id": "carol",
                                        "round_id": "r1", "amount": 10})
    assert win.status_code == 200 and win.json()["balance"] == 860
    wd = api.post("/players/carol/withdrawals", json={"transaction_id": "c-wd", "amount": 60})
    assert wd.status_code == 200  # self-excluded players can withdraw
    assert api.get("/players/carol/limits").json()["self_exclusion_until"] == until


def test_low_wagering_withdrawal_is_held_for_review(api: httpx.Client) -> None:
    _player(api, "dave", 100_000)
    wd = api.post("/players/dave/withdrawals", json={"transaction_id": "d-wd", "amount": 90_000})
    assert wd.json()["status"] == "review" and wd.json()["balance"] == 10_000


def test_deposit_velocity_raises_an_alert(api: httpx.Client) -> None:
    _player(api, "erin")
    for i in range(5):
        r = api.post("/players/erin/deposits", json={"transaction_id": f"e-d{i}", "amount": 10})
        assert r.status_code == 200
    deadline = time.monotonic() + 5
    rules: set[str] = set()
    while time.monotonic() < deadline and "velocity-deposit-count-v1" not in rules:
        alerts = api.get("/fraud/alerts", params={"player_id": "erin"}).json()["alerts"]
        rules = {a["rule_id"] for a in alerts}
        time.sleep(0.05)
    assert "velocity-deposit-count-v1" in rules
    alert = next(a for a in alerts if a["rule_id"] == "velocity-deposit-count-v1")
    assert alert["player_id"] == "erin" and alert["severity"] in ("low", "medium", "high")


def test_metrics_health_and_openapi(api: httpx.Client) -> None:
    assert api.get("/health").json() == {"status": "ok"}
    text = api.get("/metrics").text
    assert sample(text, "http_request_duration_seconds_bucket", method="POST",
                  route="/wallet/bet", le="+Inf")
    assert sample(text, "db_lock_wait_seconds_count", db="sqlite")
    doc = api.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/wallet/bet" in doc["paths"]
    assert api.get("/analytics/summary").json()["events"]["bet"] >= 1


@pytest.mark.parametrize("value", ["²", "١٢", "-1", "1e3", "x", "9" * 20])
def test_bad_query_integers_are_validation_errors(api: httpx.Client, value: str) -> None:
    # "²" and Arabic-Indic digits pass str.isdigit() but are not integers (found by schemathesis)
    for path in ("/fraud/alerts", "/players/nobody/transactions"):
        r = api.get(path, params={"limit": value})
        assert r.status_code == 400, (path, value, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_win_far_above_its_stakes_is_paid_and_goes_to_review(api: httpx.Client) -> None:
    _player(api, "lucky", 100)
    assert _bet(api, "l-b1", "lucky", 10, "lr1").status_code == 200
    win = api.post("/wallet/win", json={"transaction_id": "l-w1", "player_id": "lucky",
                                        "round_id": "lr1", "amount": 20_000})
    assert win.status_code == 200 and win.json()["balance"] == 20_090  # money owed: paid
    deadline = time.monotonic() + 5
    alerts: list[dict[str, object]] = []
    while time.monotonic() < deadline and not alerts:
        alerts = [a for a in api.get("/fraud/alerts", params={"player_id": "lucky"}).json()[
            "alerts"] if a["rule_id"] == "win-multiple-v1"]
        time.sleep(0.05)
    assert alerts and alerts[0]["reason_code"] == "LARGE_WIN_MULTIPLE"
    assert alerts[0]["evidence"]["round_stakes"] == 10  # type: ignore[index]
