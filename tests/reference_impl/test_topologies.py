"""The three topologies answer the public API identically, end to end.

One scripted session (players, money, replays, errors, limits, paging, audit, fraud alerts
raised asynchronously, analytics) runs against ``testbed serve`` in each topology; the
answers must be equal once timestamps are removed. Then Ctrl-C must stop each deployment
cleanly, leaving no process behind.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from reference_impl.http.auth import Credentials, SignedAuth, Signer
from tests.reference_impl.http_server import (
    Server,
    gone,
    purge_broker,
    sample,
    write_credentials,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(180)]
NATS = "nats://127.0.0.1:4222"


def _nats_listening() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 4222)) == 0


#: label -> (topology, broker); microservices also on NATS JetStream when a server listens
SETUPS: dict[str, tuple[str, str | None]] = {
    "monolith": ("monolith", None), "microservices": ("microservices", None),
    "hybrid": ("hybrid", None),
    **({"microservices-nats": ("microservices", NATS)} if _nats_listening() else {}),
}
FAR_FUTURE = 4_102_444_800.0  # 2100-01-01
Answer = tuple[int, Any]
#: five deposits in ten minutes; a withdrawal to an instrument another player deposited from
EXPECTED_ALERTS = {"velocity-deposit-count-v1", "link-instrument-v1"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    base = Path(tmp_path_factory.mktemp("topologies"))
    creds = write_credentials(base)
    started = {label: Server(f"sqlite:///{base / label / 'wallet.db'}", topology, shards=1,
                             broker=broker, credentials=creds)
               for label, (topology, broker) in SETUPS.items()}
    try:  # a server that fails to start must not leave the others running
        with ThreadPoolExecutor(len(started)) as pool:
            list(pool.map(Server.start, started.values()))
        yield started
    finally:
        for server in started.values():
            server.stop()
            if server.topology != "monolith":
                purge_broker(server.db, server.broker)


_SECONDS_LEFT = re.compile(r"\d+ s left")


def _strip(value: Any) -> Any:
    """Remove what depends on the clock (timestamps, the hashes chained over them and
    countdowns such as "(86399 s left)" in refusal messages)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("ts", "ts_us", "hash")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, str):
        return _SECONDS_LEFT.sub("N s left", value)
    return value


def _poll(get: Callable[[], Answer], done: Callable[[Answer], bool]) -> Answer:
    deadline = time.monotonic() + 15
    while True:
        answer = get()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def session(server: Server) -> list[Answer]:
    """The scripted session (signed); every answer as (status, body without timestamps)."""
    answers: list[Answer] = []
    with httpx.Client(base_url=server.url, timeout=10, auth=server.auth) as c:
        def call(method: str, path: str, body: Any = None, **params: Any) -> Answer:
            if isinstance(body, bytes):
                r = c.request(method, path, content=body, params=params,
                              headers={"content-type": "application/json"})
            else:
                r = c.request(method, path, json=body, params=params)
            try:
                answer: Answer = (r.status_code, _strip(r.json()))
            except ValueError:
                answer = (r.status_code, r.text)
            answers.append(answer)
            return answer

        def bet(tid: str, amount: int, rnd: str = "r1", player: str = "alice") -> Answer:
            return call("POST", "/wallet/bet", {"transaction_id": tid, "player_id": player,
                                                "round_id": rnd, "game_id": "slot",
                                                "amount": amount})

        call("POST", "/players", {"player_id": "alice", "currency": "EUR"})
        call("POST", "/players", {"player_id": "bob", "currency": "EUR"})
        call("POST", "/players", {"player_id": "alice", "currency": "USD"})  # taken
        call("POST", "/players", {"player_id": "x", "currency": "euro"})
        call("POST", "/players", b"{not json")
        call("POST", "/players/alice/deposits", {"transaction_id": "d1", "amount": 1_000,
                                                 "instrument": "card-1"})
        bet("b1", 300)
        bet("b1", 300)  # replay
        bet("b1", 301)  # conflict
        bet("b2", 5_000)  # insufficient funds
        bet("b3", 10, player="ghost")
        bet("b4", 1.5)  # type: ignore[arg-type]
        call("POST", "/wallet/win", {"transaction_id": "w1", "player_id": "alice",
                                     "round_id": "r1", "amount": 500})
        call("POST", "/wallet/win", {"transaction_id": "w2", "player_id": "alice",
                                     "round_id": "r1", "amount": 5})
        bet("b5", 100, rnd="r2")
        call("POST", "/wallet/rollback", {"transaction_id": "rb1", "player_id": "alice",
                                          "round_id": "r2", "rolled_back_transaction_id": "b5"})
        call("POST", "/wallet/rollback", {"transaction_id": "rb1", "player_id": "alice",
                                          "round_id": "r2", "rolled_back_transaction_id": "b5"})
        call("POST", "/wallet/win", {"transaction_id": "w3", "player_id": "alice",
                                     "round_id": "r2", "amount": 50})
        call("POST", "/wallet/rollback", {"transaction_id": "rb2", "player_id": "alice",
                                          "round_id": "r3", "rolled_back_transaction_id": "late"})
        bet("late", 20, rnd="r3")
        call("GET", "/players/alice/balance")
        call("GET", "/players/nobody/balance")
        for n in range(2, 6):  # five deposits in ten minutes: a velocity alert, asynchronously
            call("POST", "/players/alice/deposits", {"transaction_id": f"d{n}", "amount": 100,
                                                     "instrument": "card-1"})
        call("POST", "/players/bob/deposits", {"transaction_id": "bd1", "amount": 50,
                                               "instrument": "card-1"})
        call("POST", "/players/alice/withdrawals", {"transaction_id": "wd1", "amount": 200,
                                                    "instrument": "card-1"})
        first = call("GET", "/players/alice/transactions", limit=3)
        call("GET", "/players/alice/transactions", limit=3, before=first[1]["next_before"])
        call("PUT", "/players/alice/limits", {"deposit": {"24h": 5_000}})
        call("POST", "/players/alice/deposits", {"transaction_id": "d6", "amount": 6_000})
        call("PUT", "/players/bob/limits", {"self_exclusion_until": FAR_FUTURE})
        call("GET", "/players/bob/limits")
        bet("bb1", 10, player="bob")  # blocked: self-excluded
        call("POST", "/wallet/win", {"transaction_id": "bw1", "player_id": "bob",
                                     "round_id": "none", "amount": 1})
        call("GET", "/audit/verify")
        answers.append(_poll(
            lambda: (lambda r: (r.status_code, _strip(r.json())))(
                c.get("/fraud/alerts", params={"player_id": "alice"})),
            lambda a: {x["rule_id"] for x in a[1]["alerts"]} >= EXPECTED_ALERTS,
        ))
        answers.append(_poll(
            lambda: (lambda r: (r.status_code, r.json()))(c.get("/analytics/summary")),
            lambda a: a[1]["events"].get("deposit", 0) >= 6,
        ))
        call("GET", "/no/such/path")
        call("DELETE", "/wallet/bet")
        call("GET", "/openapi.json")
        assert server.credentials is not None
        creds = Credentials.load(server.credentials)
        for auth in (None, SignedAuth(Signer(Credentials(staff=creds.staff)))):
            with httpx.Client(base_url=server.url, timeout=10, auth=auth) as other:
                for method, path, body in (
                        ("GET", "/players/alice/balance", None),
                        ("POST", "/wallet/bet", {"transaction_id": "x"}),
                        ("GET", "/audit/verify", None)):
                    r = other.request(method, path, json=body)  # 401, then 403, 403, 200
                    answers.append((r.status_code, _strip(r.json())))
    return answers


def test_same_answers_in_every_topology(servers: dict[str, Server]) -> None:
    with ThreadPoolExecutor(len(servers)) as pool:
        results = dict(zip(servers, pool.map(session, servers.values()),
                           strict=True))
    mono = results["monolith"]
    # the reference answers are right, not only equal
    statuses = [status for status, _ in mono]
    assert statuses[:5] == [201, 201, 409, 400, 400]
    assert mono[7][1]["balance"] == 700 and mono[8][1]["error"]["code"] == "TRANSACTION_CONFLICT"
    assert mono[20][1] == {"player_id": "alice", "balance": 1_200, "currency": "EUR"}
    alerts = next(body for _, body in mono if isinstance(body, dict) and "alerts" in body)
    assert sorted(a["rule_id"] for a in alerts["alerts"]) == sorted(EXPECTED_ALERTS)
    audit = next(body for _, body in mono if isinstance(body, dict) and "first_violation" in body)
    assert audit["ok"] is True
    for topology in (label for label in results if label != "monolith"):
        other = results[topology]
        assert len(other) == len(mono)
        for step, (want, got) in enumerate(zip(mono, other, strict=True)):
            assert got == want, (topology, step)


def test_health_lists_services_and_metrics(servers: dict[str, Server]) -> None:
    health = httpx.get(f"{servers['microservices'].url}/health", timeout=5).json()
    assert health["status"] == "ok"
    assert sorted(health["services"]) == ["analytics", "fraud", "player", "wallet"]
    assert all(s["status"] == "ok" for s in health["services"].values())
    hybrid = httpx.get(f"{servers['hybrid'].url}/health", timeout=5).json()
    assert sorted(hybrid["services"]) == ["analytics", "fraud"]
    micro = servers["microservices"]
    gateway = httpx.get(f"{micro.url}/metrics", timeout=5, auth=micro.auth).text
    assert sample(gateway, "http_request_duration_seconds_count", method="POST",
                  route="/wallet/bet")
    assert httpx.get(f"{micro.url}/metrics", timeout=5).status_code == 401
    wallet_url = health["services"]["wallet"]["url"]
    wallet = httpx.get(f"{wallet_url}/metrics", timeout=5).text
    assert sample(wallet, "http_request_duration_seconds_count", method="RPC", route="execute")
    # the internal port is no way around the public checks: RPC needs the deployment's token
    bypass = httpx.post(f"{wallet_url}/rpc/execute", json={"cmd": {}}, timeout=5)
    assert bypass.status_code == 401 and bypass.json()["error"]["code"] == "UNAUTHENTICATED"


def test_ctrl_c_stops_every_process(servers: dict[str, Server]) -> None:
    for server in servers.values():
        pids = list(server.service_pids().values())
        assert server.interrupt() == 0
        assert all(gone(pid) for pid in pids), server.topology
