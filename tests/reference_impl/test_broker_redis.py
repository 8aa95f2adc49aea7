"""The Redis Streams event bus against the real Redis: at-least-once delivery to every
consumer group, redelivery after a consumer dies before XACK, duplicates ignored by id."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from reference_impl.rules import MoneyEvent
from reference_impl.transport.redis_streams import RedisStreamsEventBus

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]
REDIS = "redis://127.0.0.1:6379/0"


def _event(n: int, kind: str = "bet", player: str = "p1") -> MoneyEvent:
    return MoneyEvent(kind=kind, player_id=player, amount=n + 1, ts=1_000.0 + n,  # type: ignore[arg-type]
                      transaction_id=f"t{n}")


def _bus(prefix: str, consumer: str = "c1", **kw: float) -> RedisStreamsEventBus:
    options = {"block_ms": 50, "claim_idle_ms": 300, "stop_grace_s": 0.5, **kw}
    return RedisStreamsEventBus(REDIS, prefix, consumer, **options)  # type: ignore[arg-type]


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def run(test: Callable[[str], Awaitable[None]]) -> None:
    """Run ``test`` with a fresh key prefix, deleting its keys afterwards."""
    prefix = f"testbed-test:{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        try:
            await test(prefix)
        finally:
            client = aioredis.Redis.from_url(REDIS)
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(main())


def test_every_group_gets_every_event_once() -> None:
    async def body(prefix: str) -> None:
        fraud: list[str] = []
        analytics: list[str] = []
        exclusions: list[tuple[str, float | None]] = []
        consumer = _bus(prefix)

        async def on_fraud(e: MoneyEvent) -> None:
            fraud.append(str(e.transaction_id))

        async def on_analytics(e: MoneyEvent) -> None:
            analytics.append(str(e.transaction_id))

        consumer.subscribe("fraud", on_fraud)
        consumer.subscribe_exclusions("fraud", lambda p, u: exclusions.append((p, u)))
        consumer.subscribe("analytics", on_analytics)
        producer = _bus(prefix, "producer")
        for n in range(30):  # published before the groups exist: read from the stream start
            await producer.publish(_event(n))
        await consumer.start()
        for n in range(30, 60):
            await producer.publish(_event(n))
        await producer.publish_exclusion("p9", 1234.5)
        await _until(lambda: len(fraud) == 60 and len(analytics) == 60 and bool(exclusions))
        assert fraud == analytics == [f"t{n}" for n in range(60)]  # in order, once each
        assert exclusions == [("p9", 1234.5)]
        # 61 entries read by each of the 2 groups (analytics ignores the notice but consumes it)
        assert producer.stats.published == 61 and consumer.stats.delivered == 122
        await consumer.stop()
        await producer.stop()

    run(body)


def test_crash_before_ack_redelivers_to_restarted_consumer() -> None:
    async def body(prefix: str) -> None:
        first_seen: list[str] = []
        hang = asyncio.Event()

        async def dies_in_handler(e: MoneyEvent) -> None:
            first_seen.append(str(e.transaction_id))
            await hang.wait()  # never returns: the consumer is "killed" inside the handler

        crashing = _bus(prefix, "fraud-0")
        crashing.subscribe("fraud", dies_in_handler)
        await crashing.start()
        producer = _bus(prefix, "producer")
        await producer.publish(_event(1))
        await _until(lambda: first_seen == ["t1"])
        await crashing.stop()  # cancels the handler: no XACK, the entry stays pending

        again: list[str] = []

        async def handle(e: MoneyEvent) -> None:
            again.append(str(e.transaction_id))

        restarted = _bus(prefix, "fraud-0")  # same consumer name: re-reads its pending first
        restarted.subscribe("fraud", handle)
        await restarted.start()
        await producer.publish(_event(2))
        await _until(lambda: again == ["t1", "t2"])
        await restarted.stop()
        await producer.stop()

    run(body)


def test_dead_consumers_entries_are_claimed_by_another() -> None:
    async def body(prefix: str) -> None:
        hang = asyncio.Event()
        started: list[str] = []

        async def stuck(e: MoneyEvent) -> None:
            started.append(str(e.transaction_id))
            await hang.wait()

        dead = _bus(prefix, "fraud-0")
        dead.subscribe("fraud", stuck)
        await dead.start()
        producer = _bus(prefix, "producer")
        await producer.publish(_event(7))
        await _until(lambda: started == ["t7"])
        await dead.stop()

        got: list[str] = []

        async def handle(e: MoneyEvent) -> None:
            got.append(str(e.transaction_id))

        other = _bus(prefix, "fraud-1")  # another name: takes it over after claim_idle_ms
        other.subscribe("fraud", handle)
        await other.start()
        await _until(lambda: got == ["t7"])
        await asyncio.sleep(0.8)  # no second delivery once acknowledged
        assert got == ["t7"]
        await other.stop()
        await producer.stop()

    run(body)


def test_duplicates_are_ignored_by_event_id() -> None:
    async def body(prefix: str) -> None:
        calls: Counter[str] = Counter()

        async def handle(e: MoneyEvent) -> None:
            calls[str(e.transaction_id)] += 1

        consumer = _bus(prefix)
        consumer.subscribe("analytics", handle)
        await consumer.start()
        producer = _bus(prefix, "producer")
        for _ in range(3):  # the same transaction's event published three times
            await producer.publish(_event(5))
        await producer.publish(_event(6))
        await _until(lambda: calls["t6"] == 1)
        await asyncio.sleep(0.2)
        assert calls == Counter({"t5": 1, "t6": 1})
        assert consumer.stats.duplicates == 2
        await consumer.stop()
        # a later consumer of the same group does not see them again either
        late: list[str] = []

        async def late_handle(e: MoneyEvent) -> None:
            late.append(str(e.transaction_id))

        replacement = _bus(prefix, "c2")
        replacement.subscribe("analytics", late_handle)
        await replacement.start()
        await producer.publish(_event(8))
        await _until(lambda: late == ["t8"])
        await replacement.stop()
        await producer.stop()

    run(body)


def test_failing_handler_is_retried_then_dead_lettered() -> None:
    async def body(prefix: str) -> None:
        attempts: Counter[str] = Counter()

        async def flaky(e: MoneyEvent) -> None:
            tid = str(e.transaction_id)
            attempts[tid] += 1
            if tid == "t0" and attempts[tid] < 2:
                raise RuntimeError("transient")
            if tid == "t1":
                raise RuntimeError("poison")

        consumer = _bus(prefix, max_deliveries=3)
        consumer.subscribe("fraud", flaky)
        await consumer.start()
        producer = _bus(prefix, "producer")
        await producer.publish(_event(0))
        await producer.publish(_event(1))
        await _until(lambda: consumer.stats.dead_lettered == 1 and consumer.stats.delivered == 1)
        assert attempts == Counter({"t0": 2, "t1": 3})
        client = aioredis.Redis.from_url(REDIS)
        dead = await client.xrange(f"{prefix}:dead")
        pending = await client.xpending(f"{prefix}:events", "fraud")
        await client.aclose()
        assert len(dead) == 1 and dead[0][1][b"group"] == b"fraud"
        assert pending["pending"] == 0
        await consumer.stop()
        await producer.stop()

    run(body)
