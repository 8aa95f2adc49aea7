"""The NATS JetStream event bus against the real server (skipped when none listens):
every durable consumer gets every event, duplicates are ignored by id, a consumer that dies
before acknowledging has its entry redelivered."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from reference_impl.rules import MoneyEvent
from reference_impl.transport.nats_jetstream import NatsJetStreamEventBus

NATS = "nats://127.0.0.1:4222"


def _listening() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 4222)) == 0


pytestmark = [pytest.mark.timeout(60), pytest.mark.nats,
              pytest.mark.skipif(not _listening(), reason="no NATS server on 127.0.0.1:4222")]


def _event(n: int) -> MoneyEvent:
    return MoneyEvent(kind="deposit", player_id="p1", amount=n + 1, ts=1_000.0 + n,
                      transaction_id=f"t{n}")


def _bus(prefix: str, consumer: str = "c1") -> NatsJetStreamEventBus:
    return NatsJetStreamEventBus(NATS, prefix, consumer, fetch_timeout_s=0.1, ack_wait_s=1.0,
                                 stop_grace_s=0.3)


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def run(test: Callable[[str], Awaitable[None]]) -> None:
    """Run ``test`` with a fresh stream, deleted afterwards."""
    prefix = f"testbed-test:{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        try:
            await test(prefix)
        finally:
            cleaner = _bus(prefix, "cleaner")
            await cleaner.purge()
            await cleaner.stop()

    asyncio.run(main())


def test_every_consumer_once_and_duplicates_ignored() -> None:
    async def body(prefix: str) -> None:
        got: dict[str, list[str]] = {"fraud": [], "analytics": []}

        def collect(name: str) -> Callable[[MoneyEvent], Awaitable[None]]:
            async def handle(e: MoneyEvent) -> None:
                got[name].append(str(e.transaction_id))
            return handle

        consumer = _bus(prefix)
        for name in got:
            consumer.subscribe(name, collect(name))
        producer = _bus(prefix, "producer")
        for n in range(20):
            await producer.publish(_event(n))
        await producer.publish(_event(3))  # a duplicate of t3
        await consumer.start()
        await _until(lambda: all(len(v) == 20 for v in got.values()))
        await asyncio.sleep(0.3)
        assert got["fraud"] == got["analytics"] == [f"t{n}" for n in range(20)]
        await consumer.stop()
        await producer.stop()

    run(body)


def test_crash_before_ack_redelivers() -> None:
    async def body(prefix: str) -> None:
        hang = asyncio.Event()
        first: list[str] = []

        async def stuck(e: MoneyEvent) -> None:
            first.append(str(e.transaction_id))
            await hang.wait()

        dying = _bus(prefix, "fraud-0")
        dying.subscribe("fraud", stuck)
        await dying.start()
        producer = _bus(prefix, "producer")
        await producer.publish(_event(1))
        await _until(lambda: first == ["t1"])
        await dying.stop()  # the handler is cancelled: never acknowledged

        calls: Counter[str] = Counter()

        async def handle(e: MoneyEvent) -> None:
            calls[str(e.transaction_id)] += 1

        restarted = _bus(prefix, "fraud-1")
        restarted.subscribe("fraud", handle)
        await restarted.start()
        await producer.publish(_event(2))
        await _until(lambda: calls == Counter({"t1": 1, "t2": 1}))  # after ack_wait
        await restarted.stop()
        await producer.stop()

    run(body)
