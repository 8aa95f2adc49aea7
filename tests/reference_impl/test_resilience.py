"""The internal-call policies: breaker and bulkhead state machines (model-checked with
hypothesis), the policy's validation, and the RPC client composing them against a real
HTTP server that stops answering."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impl.metrics import Registry
from reference_impl.services.ports import ServiceUnavailable
from reference_impl.transport.resilience import (
    DEFAULT_POLICY,
    BreakerState,
    Bulkhead,
    CallPolicy,
    CircuitBreaker,
    DependencyRejected,
)
from reference_impl.transport.rpc import RpcClient, RpcMethod, rpc_app
from testbed.cli import cli
from tests.reference_impl.http_server import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


POLICY = CallPolicy(breaker_window=10, breaker_min_calls=4, breaker_failure_rate=0.5,
                    breaker_open_s=5.0, breaker_probes=2, max_concurrent=8,
                    reserved_for_money=3)


def test_breaker_opens_at_the_failure_rate_and_fails_fast_until_open_s() -> None:
    clock = FakeClock()
    b = CircuitBreaker(POLICY, clock)
    for failed in (False, True, False):
        assert b.allow()
        b.record(failed)
    assert b.state is BreakerState.CLOSED  # 3 calls < min_calls
    assert b.allow()
    b.record(True)  # 2 of 4 failed = 0.5
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    clock.now = 4.2
    assert not b.allow()
    assert b.retry_after_s() == 1
    clock.now = 5.0
    assert b.allow() and b.allow()  # two probes
    assert not b.allow()  # no third while they are in flight
    assert b.state is BreakerState.HALF_OPEN
    b.record(False)
    assert b.state is BreakerState.HALF_OPEN
    b.record(False)
    assert b.state is BreakerState.CLOSED
    assert b.failure_rate() == 0.0


def test_a_failed_probe_reopens_the_breaker_for_a_whole_period() -> None:
    clock = FakeClock()
    b = CircuitBreaker(POLICY, clock)
    for _ in range(4):
        b.allow()
        b.record(True)
    clock.now = 6.0
    assert b.allow()
    b.record(True)
    assert b.state is BreakerState.OPEN
    assert b.retry_after_s() == 5
    clock.now = 10.9
    assert not b.allow()


class BreakerModel:
    """The specification, written plainly: the breaker must agree with it at every step."""

    def __init__(self, p: CallPolicy) -> None:
        self.p, self.state, self.window = p, "closed", deque(maxlen=p.breaker_window)
        self.opened_at, self.in_flight, self.ok = 0.0, 0, 0

    def allow(self, now: float) -> bool:
        if self.state == "open" and now - self.opened_at >= self.p.breaker_open_s:
            self.state, self.in_flight, self.ok = "half_open", 0, 0
        if self.state == "open":
            return False
        if self.state == "half_open":
            if self.in_flight + self.ok >= self.p.breaker_probes:
                return False
            self.in_flight += 1
        return True

    def record(self, failed: bool, now: float) -> None:
        if self.state == "half_open":
            self.in_flight -= 1
            if failed:
                self.state, self.opened_at, self.window = "open", now, deque(
                    maxlen=self.p.breaker_window)
            else:
                self.ok += 1
                if self.ok >= self.p.breaker_probes:
                    self.state = "closed"
                    self.window.clear()
        elif self.state == "closed":
            self.window.append(failed)
            if len(self.window) >= self.p.breaker_min_calls and \
                    sum(self.window) / len(self.window) >= self.p.breaker_failure_rate:
                self.state, self.opened_at = "open", now
                self.window.clear()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3), st.booleans(), st.booleans()), max_size=200))
def test_breaker_agrees_with_its_model(steps: list[tuple[float, bool, bool]]) -> None:
    clock = FakeClock()
    b, model = CircuitBreaker(POLICY, clock), BreakerModel(POLICY)
    pending: list[bool] = []  # calls let through, not yet recorded
    for advance, fails, finish_one in steps:
        clock.now += advance
        if finish_one and pending:
            failed = pending.pop(0)
            b.record(failed)
            model.record(failed, clock.now)
        else:
            allowed = b.allow()
            assert allowed == model.allow(clock.now)
            if allowed:
                pending.append(fails)
        assert b.state.value == model.state
        assert 0 <= b.probes_in_flight <= POLICY.breaker_probes
        assert len(b.outcomes) <= POLICY.breaker_window
        if b.state is BreakerState.OPEN:
            assert 1 <= b.retry_after_s() <= math.ceil(POLICY.breaker_open_s)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=200))
def test_bulkhead_bounds_calls_and_keeps_slots_for_money(ops: list[tuple[bool, bool]]) -> None:
    bh = Bulkhead(POLICY)
    held: list[bool] = []
    for acquire, money in ops:
        if acquire or not held:
            got = bh.try_acquire(money)
            limit = POLICY.max_concurrent - (0 if money else POLICY.reserved_for_money)
            assert got == (len(held) < limit)
            if got:
                held.append(money)
        else:
            held.pop()
            bh.release()
        assert bh.in_flight == len(held) <= POLICY.max_concurrent
        assert sum(not m for m in held) <= POLICY.max_concurrent - POLICY.reserved_for_money


@pytest.mark.parametrize(("fields", "named"), [
    ({"timeout_s": 0}, "timeout_s"), ({"timeout_s": float("nan")}, "timeout_s"),
    ({"retries": -1}, "retries"), ({"retries": 1.5}, "retries"),
    ({"breaker_failure_rate": 1.5}, "breaker_failure_rate"),
    ({"breaker_min_calls": 30}, "breaker_min_calls"),
    ({"reserved_for_money": 64}, "reserved_for_money"),
    ({"max_concurrent": True}, "max_concurrent"),
    ({"timeout_s": "fast"}, "timeout_s"), ({"tiemout_s": 1}, "tiemout_s"),
])
def test_bad_policies_are_refused_naming_the_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        CallPolicy.from_dict(dict(fields))


def test_policy_from_yaml_changes_only_the_fields_given(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("timeout_s: 0.5\nbreaker_open_s: 2\n")
    p = CallPolicy.from_yaml(path)
    assert (p.timeout_s, p.breaker_open_s, p.retries) == (0.5, 2, DEFAULT_POLICY.retries)
    path.write_text("- 1\n")
    with pytest.raises(ValueError, match=r"p\.yaml"):
        CallPolicy.from_yaml(path)
    assert CallPolicy.from_dict(DEFAULT_POLICY.to_dict()) == DEFAULT_POLICY


# --- the RPC client composing them, against a real HTTP server --------------------------------

@contextmanager
def rpc_server(methods: dict[str, RpcMethod], token: str = "") -> Iterator[str]:
    """``rpc_app(methods, token=token)`` served by uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(rpc_app("dep", methods, token=token), host="127.0.0.1",
                                           port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "rpc server did not start"
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_client_retries_idempotent_calls_only_and_sheds_reporting_first() -> None:
    calls: Counter[str] = Counter()
    hang = threading.Event()  # set: "alerts" and "set_limits" never answer in time

    async def execute(a: dict[str, object]) -> object:
        calls["execute"] += 1
        if calls["execute"] == 1:  # the first attempt times out; the retry answers
            await asyncio.sleep(1.0)
        return {"ok": a["command"]}

    async def slow(name: str) -> object:
        calls[name] += 1
        await asyncio.sleep(2.0 if hang.is_set() else 0)
        return {}

    async def alerts(a: dict[str, object]) -> object:
        return await slow("alerts")

    async def set_limits(a: dict[str, object]) -> object:
        return await slow("set_limits")

    policy = CallPolicy(timeout_s=0.3, retries=2, backoff_initial_s=0.01, backoff_jitter_s=0.01,
                        breaker_window=50, breaker_min_calls=50, max_concurrent=3,
                        reserved_for_money=1)

    async def scenario(url: str) -> None:
        metrics = Registry()
        client = RpcClient("dep", url, policy=policy, metrics=metrics)
        try:
            assert await client.call("execute", command="c1") == {"ok": "c1"}
            assert calls["execute"] == 2  # retried: a money command carries its id
            hang.set()
            with pytest.raises(ServiceUnavailable):
                await client.call("set_limits")
            assert calls["set_limits"] == 1  # not idempotent: not sent again
            # two reporting calls hang; the third finds no reporting slot, money still does
            hung = [asyncio.create_task(client.call("alerts")) for _ in range(2)]
            await asyncio.sleep(0.1)
            with pytest.raises(DependencyRejected, match="shed") as shed:
                await client.call("alerts")
            assert shed.value.retry_after_s == 1
            assert client.bulkhead.in_flight == 2
            assert await client.call("execute", command="c2") == {"ok": "c2"}
            for task in hung:
                with pytest.raises(ServiceUnavailable):
                    await task
            assert client.bulkhead.in_flight == 0
            text = metrics.expose()  # prometheus_client writes the labels sorted by name
            assert 'rpc_rejected_total{reason="shed",service="dep"} 1.0' in text
            assert 'rpc_retries_total{service="dep"}' in text
        finally:
            await client.close()

    with rpc_server({"execute": execute, "alerts": alerts, "set_limits": set_limits}) as url:
        asyncio.run(scenario(url))


@pytest.mark.parametrize(("text", "named"), [
    ("timeout_s: -1\n", "timeout_s"), ("breaker_opne_s: 2\n", "breaker_opne_s"),
    ("retries: [1]\n", "retries"), ("timeout_s: .nan\n", "timeout_s"),
])
def test_serve_refuses_a_bad_policy_file_naming_the_field(
    tmp_path: Path, text: str, named: str,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["serve", "--topology", "microservices",
                                      "--rpc-policy", str(path)])
    assert result.exit_code == 2, result.output
    assert "--rpc-policy" in result.output and named in result.output, result.output


def test_the_public_api_answers_a_dependency_failure_503_with_retry_after() -> None:
    """The edge's one responder: a rejected call answers 503 with the breaker's Retry-After,
    any other ServiceUnavailable (and a degraded /health) with Retry-After: 1."""
    from types import SimpleNamespace

    from reference_impl.http.app import create_app
    from reference_impl.http.guard import EdgeConfig

    async def execute(cmd: object) -> None:
        raise DependencyRejected("wallet", "circuit open", 3)

    async def balance(player: str) -> None:
        raise ServiceUnavailable("player", "ReadTimeout")

    async def health() -> tuple[bool, dict[str, str]]:
        return False, {"status": "degraded"}

    office = SimpleNamespace(metrics=Registry(), wallet=SimpleNamespace(execute=execute),
                             players=SimpleNamespace(balance=balance), health=health)
    app = create_app(office, edge=EdgeConfig(credentials=None))  # type: ignore[arg-type]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            money = await client.post("/players/p1/deposits", json={
                "transaction_id": "d1", "amount": 100, "currency": "EUR",
                "instrument": "card", "device": "dev"})
            read = await client.get("/players/p1/balance")
            degraded = await client.get("/health")
        assert (money.status_code, money.headers.get("retry-after")) == (503, "3"), money.text
        assert money.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert (read.status_code, read.headers.get("retry-after")) == (503, "1"), read.text
        assert (degraded.status_code, degraded.headers.get("retry-after")) == (503, "1")

    asyncio.run(scenario())


def test_the_policy_client_sends_the_internal_token() -> None:
    """Edge's internal RPC token survives the policy client: with it the call is served,
    without it the service refuses (401, a 4xx: not a breaker failure)."""
    from reference_impl.domain.errors import ErrorCode, WalletError

    async def balance(kwargs: dict[str, object]) -> dict[str, str]:
        return {"ok": "yes"}

    async def scenario(url: str) -> None:
        good = RpcClient("dep", url, token="s3cret")
        anonymous = RpcClient("dep", url)
        try:
            assert await good.call("balance", player_id="p1") == {"ok": "yes"}
            with pytest.raises(WalletError) as refused:
                await anonymous.call("balance", player_id="p1")
            assert refused.value.code == ErrorCode.UNAUTHENTICATED
            assert anonymous.breaker.allow()
        finally:
            await good.close()
            await anonymous.close()

    with rpc_server({"balance": balance}, token="s3cret") as url:
        asyncio.run(scenario(url))
