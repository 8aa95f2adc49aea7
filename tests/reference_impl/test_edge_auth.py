"""Access control and bounds at the edge: 401/403 per route and scope, signed requests
(altered, replayed, stale), 429 with Retry-After, 413 before the body is read, and none of
them changing a balance."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from reference_impl.cli import serve
from reference_impl.http.auth import (
    CLOCK_SKEW_S,
    Credentials,
    CredentialsError,
    NonceCache,
    SignedAuth,
    Signer,
    signature,
)
from reference_impl.http.guard import EdgeConfig, RateLimited, TokenBuckets
from reference_impl.http.openapi import openapi_document
from reference_impl.services.backoffice import BackOfficeConfig
from tests.reference_impl.http_server import running_server, signed, write_credentials

RATE = 50.0  # requests/s per credential and per player in the limited server


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_credentials(Path(tmp_path_factory.mktemp("creds")), ("prov-a", "prov-b"))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, creds: Path) -> Iterator[str]:
    db = Path(tmp_path_factory.mktemp("auth")) / "wallet.db"
    edge = EdgeConfig(credentials=str(creds), credential_rate=RATE, player_rate=RATE)
    with running_server(BackOfficeConfig(db=f"sqlite:///{db}"), edge) as base:
        yield base


def _client(url: str, creds: Path | None, **who: Any) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=10, auth=signed(creds, **who))


def _code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def _fund(url: str, creds: Path, pid: str, amount: int = 1_000) -> None:
    with _client(url, creds) as c:
        assert c.post("/players", json={"player_id": pid, "currency": "EUR"}).status_code == 201
        assert c.post(f"/players/{pid}/deposits",
                      json={"transaction_id": f"d-{pid}", "amount": amount}).status_code == 200


def _balance(url: str, creds: Path, pid: str) -> int:
    with _client(url, creds) as c:
        value: int = c.get(f"/players/{pid}/balance").json()["balance"]
        return value


def _routes() -> list[tuple[str, str]]:
    return [(method.upper(), path.replace("{player_id}", "p1"))
            for path, ops in openapi_document()["paths"].items() for method in ops] + [
        ("GET", "/metrics")]


def test_without_credentials_every_route_but_health_is_401(url: str, creds: Path) -> None:
    _fund(url, creds, "p1")
    with httpx.Client(base_url=url, timeout=10) as anonymous:
        for method, path in _routes():
            r = anonymous.request(method, path, json={} if method in ("POST", "PUT") else None)
            if path in ("/health", "/openapi.json"):
                assert r.status_code == 200, path
            else:
                assert _code(r) == (401, "UNAUTHENTICATED"), (method, path, r.text)
        bad = {"Authorization": "Bearer " + "x" * 40}
        assert _code(anonymous.get("/players/p1/balance", headers=bad))[0] == 401
    assert _balance(url, creds, "p1") == 1_000


def test_each_kind_of_caller_is_kept_to_its_scope(url: str, creds: Path) -> None:
    _fund(url, creds, "scope")
    bet = {"transaction_id": "s-b", "player_id": "scope", "round_id": "r", "game_id": "g",
           "amount": 5}
    credentials = Credentials.load(creds)
    operator = httpx.Client(base_url=url, timeout=10, headers={
        "Authorization": f"Bearer {credentials.operators[0].token}"})
    staff = httpx.Client(base_url=url, timeout=10, headers={
        "Authorization": f"Bearer {credentials.staff[0].token}"})
    provider = httpx.Client(base_url=url, timeout=10, auth=SignedAuth(Signer(Credentials(
        providers=credentials.providers))))  # a provider only: never falls back to a token
    with operator, staff, provider:
        assert _code(operator.post("/wallet/bet", json=bet)) == (403, "FORBIDDEN")
        assert _code(operator.get("/fraud/alerts")) == (403, "FORBIDDEN")
        assert _code(staff.post("/players/scope/deposits",
                                json={"transaction_id": "s-d", "amount": 5})) == (403,
                                                                                   "FORBIDDEN")
        assert _code(staff.post("/wallet/bet", json=bet)) == (403, "FORBIDDEN")
        assert _code(provider.post("/players/scope/withdrawals",
                                   json={"transaction_id": "s-w", "amount": 5})) == (403,
                                                                                      "FORBIDDEN")
        assert _code(provider.get("/audit/verify")) == (403, "FORBIDDEN")
        assert _code(provider.put("/players/scope/limits",
                                  json={"self_exclusion_until": 4e9})) == (403, "FORBIDDEN")
        assert provider.get("/players/scope/balance").status_code == 200
        assert operator.get("/players/scope/transactions").status_code == 200
        assert staff.get("/metrics").status_code == 200
        assert staff.get("/audit/verify").json()["ok"] is True
        assert provider.post("/wallet/bet", json=bet).json()["balance"] == 995


def _signed_headers(creds: Path, method: str, target: str, body: bytes) -> dict[str, str]:
    return {**Signer(Credentials.load(creds)).headers(method, target, body),
            "content-type": "application/json"}


def test_altered_replayed_or_stale_signed_requests_are_refused(url: str, creds: Path) -> None:
    _fund(url, creds, "sig")
    body = json.dumps({"transaction_id": "sig-b", "player_id": "sig", "round_id": "r",
                       "game_id": "g", "amount": 10}).encode()
    with httpx.Client(base_url=url, timeout=10) as c:
        headers = _signed_headers(creds, "POST", "/wallet/bet", body)
        altered = body.replace(b'"amount": 10', b'"amount": 99')
        assert _code(c.post("/wallet/bet", content=altered, headers=headers))[0] == 401
        other_path = c.post("/wallet/win", content=body, headers=headers)
        assert _code(other_path) == (401, "UNAUTHENTICATED")
        assert c.post("/wallet/bet", content=body, headers=headers).status_code == 200
        replay = c.post("/wallet/bet", content=body, headers=headers)
        assert _code(replay) == (401, "UNAUTHENTICATED")
        assert "replay" in replay.json()["error"]["message"]
        secret = Credentials.load(creds).providers[0].secret
        stale = str(int((time.time() - CLOCK_SKEW_S - 5) * 1000))
        old = {**headers, "X-Timestamp": stale, "X-Nonce": "ab" * 16,
               "X-Signature": signature(secret, stale, "ab" * 16, "POST", "/wallet/bet", body)}
        assert _code(c.post("/wallet/bet", content=body, headers=old))[0] == 401
        wrong_caller = {**_signed_headers(creds, "POST", "/wallet/bet", body),
                        "X-Caller": "prov-b"}
        assert _code(c.post("/wallet/bet", content=body, headers=wrong_caller))[0] == 401
    assert _balance(url, creds, "sig") == 990  # only the one valid request moved money


def test_a_retry_is_signed_anew_and_answers_the_first_answer(url: str, creds: Path) -> None:
    _fund(url, creds, "retry")
    bet = {"transaction_id": "retry-b", "player_id": "retry", "round_id": "r", "game_id": "g",
           "amount": 10}
    with _client(url, creds) as c:
        first = c.post("/wallet/bet", json=bet)
        again = c.post("/wallet/bet", json=bet)  # new timestamp and nonce, same id
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()
    assert _balance(url, creds, "retry") == 990


def test_a_burst_past_the_limit_gets_429_with_retry_after(tmp_path: Path, creds: Path) -> None:
    edge = EdgeConfig(credentials=str(creds), credential_rate=1.0, player_rate=1.0)
    with running_server(BackOfficeConfig(db=f"sqlite:///{tmp_path / 'w.db'}"), edge) as base:
        with _client(base, creds) as c:  # the operator: 2 requests of burst, then 1/s
            assert c.post("/players", json={"player_id": "burst", "currency": "EUR"}
                          ).status_code == 201
            answers = [c.get("/players/burst/balance") for _ in range(10)]
            limited = [r for r in answers if r.status_code == 429]
            assert len(limited) >= 5, [r.status_code for r in answers]
            assert limited[0].json()["error"]["code"] == "RATE_LIMITED"
            assert int(limited[0].headers["retry-after"]) >= 1
        with _client(base, creds, provider="prov-b") as c:  # the player's bucket is empty too
            bet = c.post("/wallet/bet", json={"transaction_id": "b", "player_id": "burst",
                                              "round_id": "r", "game_id": "g", "amount": 1})
            assert bet.status_code == 429 and "player" in bet.json()["error"]["message"]
            time.sleep(float(bet.headers["retry-after"]))
            assert c.get("/players/burst/balance").json()["balance"] == 0


def test_a_10_mb_body_gets_413_without_being_read_whole(url: str, creds: Path) -> None:
    _fund(url, creds, "big")
    host, port = url.removeprefix("http://").split(":")
    token = Credentials.load(creds).operators[0].token
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /players/big/deposits HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: application/json\r\nAuthorization: Bearer "
                  + token.encode() + b"\r\nContent-Length: 10000000\r\n\r\n" + b"{" * 1000)
        answer = s.recv(65536)  # answered although 9,999,000 bytes were never sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"PAYLOAD_TOO_LARGE" in answer

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"transaction_id": "big-d", "amount": 5, "device": "'
        for _ in range(160):
            yield b"x" * 65_536
        yield b'"}'

    with _client(url, creds) as c:
        r = c.post("/players/big/deposits", content=chunks(),
                   headers={"content-type": "application/json"})
        assert _code(r) == (413, "PAYLOAD_TOO_LARGE")
    assert _balance(url, creds, "big") == 1_000


def test_the_openapi_document_declares_the_security_schemes() -> None:
    doc = openapi_document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["operatorToken"]["scheme"] == "bearer"
    assert schemes["providerSignature"]["type"] == "apiKey"
    bet = doc["paths"]["/wallet/bet"]["post"]
    assert {"401", "403", "413", "415", "429"} <= set(bet["responses"])
    assert bet["security"] == [{"providerSignature": []}]
    assert "security" not in doc["paths"]["/health"]["get"]
    codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert {"UNAUTHENTICATED", "FORBIDDEN", "RATE_LIMITED"} <= set(codes["enum"])


# ----------------------------------------------------------------------- units and CLI


def test_nonce_cache_refuses_replays_and_stays_bounded() -> None:
    cache = NonceCache(capacity=3)
    assert cache.add("a", "00" * 8, 100.0) and not cache.add("a", "00" * 8, 101.0)
    assert cache.add("b", "00" * 8, 100.0)  # nonces are per caller
    assert cache.add("a", "11" * 8, 100.0)
    with pytest.raises(RateLimited, match="too many signed requests"):
        cache.add("a", "22" * 8, 100.0)
    assert len(cache) == 3
    assert cache.add("a", "22" * 8, 100.0 + 2 * CLOCK_SKEW_S + 2)  # the old ones expired
    assert len(cache) == 1


def test_token_bucket_refills_at_its_rate_and_stays_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(10.0, "player", clock=lambda: now[0], max_buckets=4)
    for _ in range(20):  # 2 s of burst
        buckets.take("p")
    with pytest.raises(Exception, match="requests/s") as info:
        buckets.take("p")
    assert info.value.retry_after == 1  # type: ignore[attr-defined]
    now[0] += 0.1
    buckets.take("p")  # one token back after 0.1 s
    for i in range(10):
        buckets.take(f"q{i}")
    assert len(buckets) <= 4


def test_credentials_file_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("providers:\n  - {id: p, secret: short}\n")
    with pytest.raises(CredentialsError, match=r"providers\.0\.secret"):
        Credentials.load(bad)
    bad.write_text("operators: []\n")
    with pytest.raises(CredentialsError, match="no credentials"):
        Credentials.load(bad)


def test_serve_refuses_a_public_interface_without_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.delenv("TESTBED_CREDENTIALS", raising=False)
    result = CliRunner().invoke(serve, ["--host", "0.0.0.0"])
    assert result.exit_code == 2 and "refusing to serve without credentials" in result.output
    started: list[Any] = []
    monkeypatch.setattr("reference_impl.cli.serve_monolith", started.append)
    result = CliRunner().invoke(serve, ["--db", f"sqlite:///{tmp_path / 'w.db'}"])
    assert result.exit_code == 0 and "EVERY ROUTE IS OPEN" in result.output
    assert started and started[0].edge.credentials is None
    creds = write_credentials(tmp_path)
    monkeypatch.setenv("TESTBED_CREDENTIALS", str(creds))
    result = CliRunner().invoke(serve, ["--host", "0.0.0.0", "--db",
                                        f"sqlite:///{tmp_path / 'w.db'}"])
    assert result.exit_code == 0 and "OPEN" not in result.output
    assert started[-1].edge.credentials == str(creds.resolve())


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300),
       st.floats(min_value=0.5, max_value=100))
def test_a_bucket_never_lets_more_than_its_burst_plus_its_rate(
    gaps: list[float], rate: float,
) -> None:
    now = [0.0]
    buckets = TokenBuckets(rate, "player", clock=lambda: now[0])
    allowed = 0
    for gap in gaps:
        now[0] += gap
        try:
            buckets.take("p")
            allowed += 1
        except RateLimited as exc:
            assert exc.retry_after >= 1
    assert allowed <= buckets.capacity + rate * now[0] + 1e-9
