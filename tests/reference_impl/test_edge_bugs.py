"""Issue 12's bugs at the HTTP edge, each a test that failed on the code before the fix
(an open server: no credentials, as the old code had none)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reference_impl.http.app import create_app
from reference_impl.services.backoffice import BackOffice, BackOfficeConfig
from tests.reference_impl.http_server import Server, running_server, sample


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    db = Path(tmp_path_factory.mktemp("edge-bugs")) / "wallet.db"
    with running_server(BackOfficeConfig(db=f"sqlite:///{db}")) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        yield client


def _code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def _player(api: httpx.Client, pid: str, deposit: int = 1_000) -> None:
    assert api.post("/players", json={"player_id": pid, "currency": "EUR"}).status_code == 201
    r = api.post(f"/players/{pid}/deposits", json={"transaction_id": f"d-{pid}",
                                                    "amount": deposit})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("body", [
    {"wager": {"24h": 2**64}}, {"loss": {"7d": 10**300}}, {"deposit": {"30d": 1e300}},
    {"deposit": {"24h": 10**15 + 1}},
    {"self_exclusion_until": 1e308}, {"timeout_until": 1e300}, {"timeout_until": -5},
])
def test_out_of_range_limits_are_refused_and_nothing_is_stored(
    api: httpx.Client, body: dict[str, Any],
) -> None:
    pid = f"lim-{abs(hash(str(body))) % 10**8}"
    _player(api, pid)
    before = api.get(f"/players/{pid}/limits")
    assert before.status_code == 200
    assert _code(api.put(f"/players/{pid}/limits", json=body)) == (400, "VALIDATION_ERROR")
    after = api.get(f"/players/{pid}/limits")
    assert after.status_code == 200 and after.json() == before.json()
    r = api.put(f"/players/{pid}/limits", json={"wager": {"24h": 500}})
    assert r.status_code == 200 and r.json()["wager"]["24h"] == 500
    bet = {"transaction_id": f"b-{pid}", "player_id": pid, "round_id": "r", "game_id": "g",
           "amount": 10}
    assert api.post("/wallet/bet", json=bet).status_code == 200  # not blocked for good


def test_deep_json_is_a_validation_error_without_a_traceback(
    api: httpx.Client, caplog: pytest.LogCaptureFixture,
) -> None:
    deep = b'{"a":' * 500 + b"1" + b"}" * 500
    deep_list = b'{"a":' + b"[" * 500 + b"]" * 500 + b"}"
    with caplog.at_level(logging.ERROR):
        for path in ("/wallet/bet", "/players", "/players/x/deposits"):
            for body in (deep, deep_list):
                r = api.post(path, content=body, headers={"content-type": "application/json"})
                assert _code(r) == (400, "VALIDATION_ERROR"), (path, r.text)
        r = api.put("/players/x/limits", content=deep,
                    headers={"content-type": "application/json"})
        assert _code(r) == (400, "VALIDATION_ERROR")
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


class _Broken:
    """A wallet with a bug."""

    async def execute(self, cmd: Any) -> Any:
        raise RuntimeError("bug")


def test_a_500_is_counted_in_metrics() -> None:
    office = BackOffice(storage=None, bus=None, players=None, wallet=_Broken(),  # type: ignore[arg-type]
                        fraud=None, analytics=None)  # type: ignore[arg-type]
    app = create_app(office)

    async def calls() -> str:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post("/wallet/bet", json={
                "transaction_id": "t", "player_id": "p", "round_id": "r", "game_id": "g",
                "amount": 1})
            assert r.status_code == 500
            return (await client.get("/metrics")).text

    text = asyncio.run(calls())
    assert sample(text, "http_responses_total", method="POST", route="/wallet/bet",
                  status="500") == 1


def test_ids_with_a_trailing_newline_are_refused(api: httpx.Client) -> None:
    _player(api, "nl")
    for method, path, body in (
        ("GET", "/players/nl%0A/balance", None),
        ("GET", "/players/nl%0A/transactions", None),
        ("POST", "/players/nl%0A/deposits", {"transaction_id": "dep-nl2", "amount": 5}),
    ):
        r = api.request(method, path, json=body)
        assert _code(r) == (400, "VALIDATION_ERROR"), (path, r.text)
    assert api.get("/players/nl/balance").json()["balance"] == 1_000


def test_trailing_slash_is_a_json_404_not_a_redirect(api: httpx.Client) -> None:
    r = api.post("/wallet/bet/", json={"transaction_id": "x"})
    assert _code(r) == (404, "NOT_FOUND")
    r = api.get("/wallet/bet")
    assert _code(r) == (405, "METHOD_NOT_ALLOWED") and r.headers["allow"] == "POST"


def test_rollback_naming_another_round_is_refused(api: httpx.Client) -> None:
    _player(api, "rbr")
    bet = {"transaction_id": "rbr-b", "player_id": "rbr", "round_id": "r1", "game_id": "g",
           "amount": 100}
    assert api.post("/wallet/bet", json=bet).json()["balance"] == 900
    r = api.post("/wallet/rollback", json={"transaction_id": "rbr-rb", "player_id": "rbr",
                                           "round_id": "r2", "rolled_back_transaction_id":
                                           "rbr-b"})
    assert _code(r) == (404, "BET_NOT_FOUND")
    assert api.get("/players/rbr/balance").json()["balance"] == 900
    r = api.post("/wallet/rollback", json={"transaction_id": "rbr-rb2", "player_id": "rbr",
                                           "round_id": "r1", "rolled_back_transaction_id":
                                           "rbr-b"})
    assert r.json()["balance"] == 1_000


def test_a_body_not_sent_as_json_is_refused_and_moves_nothing(api: httpx.Client) -> None:
    _player(api, "csrf")
    body = b'{"transaction_id": "csrf-d", "amount": 5}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        r = api.post("/players/csrf/deposits", content=body, headers=headers)
        assert _code(r) == (415, "UNSUPPORTED_MEDIA_TYPE"), r.text
    assert api.get("/players/csrf/balance").json()["balance"] == 1_000
    r = api.post("/players/csrf/deposits", content=body,
                 headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_metrics_of_every_worker_are_summed(tmp_path: Path) -> None:
    """``--workers 2``: whichever worker answers the scrape, it counts every request."""
    server = Server(f"sqlite:///{tmp_path / 'wallet.db'}", "monolith",
                    extra_args=("--workers", "2"))
    server.start()
    try:
        n = 40
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for i in range(n):  # new connections: the kernel spreads them over the workers
                with httpx.Client(base_url=server.url, timeout=10) as one:
                    assert one.get(f"/players/w{i}/balance").status_code == 404
            for _ in range(5):
                count = sample(c.get("/metrics").text, "http_responses_total", method="GET",
                               route="/players/{player_id}/balance", status="404")
                assert count == n
    finally:
        server.stop()
