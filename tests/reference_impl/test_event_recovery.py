"""Events of committed operations survive a crash between the commit and the publish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from reference_impl.domain import Bet, Deposit, Rollback
from reference_impl.rules import MoneyEvent
from reference_impl.services.event_recovery import (
    EventMarks,
    PublishTracker,
    event_of,
    publisher_alive,
    recover_events,
)
from reference_impl.services.wallet import WalletService
from reference_impl.storage import Storage, open_storage
from tests.reference_impl.http_server import Server, purge_broker, write_credentials
from tests.reference_impl.test_bank_jepsen import History, send, wait_restarted


class CapturingBus:
    """Collects events; ``hang`` makes publish block forever (a process about to die)."""

    def __init__(self, hang: bool = False, unsent: float | None = None) -> None:
        self.events: list[MoneyEvent] = []
        self.hang, self.unsent = hang, unsent
        self.blocked = asyncio.Event()

    async def publish(self, event: MoneyEvent) -> None:
        if self.hang:
            self.blocked.set()
            await asyncio.Event().wait()
        self.events.append(event)

    def oldest_unsent_ts(self) -> float | None:
        return self.unsent


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


def run(db_url: str, body: Callable[[Storage], Awaitable[None]]) -> None:
    async def main() -> None:
        storage = await open_storage(db_url)
        try:
            await body(storage)
        finally:
            await storage.close()

    asyncio.run(main())


def test_watermark_trails_in_flight_operations_and_the_backlog() -> None:
    tracker, clock = PublishTracker(), Clock(10_000_000)
    bus = CapturingBus()
    marks = EventMarks(None, tracker, bus, clock, "h:1", margin_us=0)  # type: ignore[arg-type]
    assert marks.watermark() == 10_001_000
    tracker.begin(9_000_000)
    tracker.begin(9_500_000)
    tracker.begin(9_000_000)
    assert marks.watermark() == 9_000_000
    tracker.end(9_000_000)
    assert marks.watermark() == 9_000_000  # one of the two still in flight
    tracker.end(9_000_000)
    assert marks.watermark() == 9_500_000
    bus.unsent = 8.0  # an event of 8 s waits in the local backlog
    assert marks.watermark() == 8_000_000
    tracker.end(9_500_000)
    bus.unsent = None
    assert tracker.oldest() is None and marks.watermark() > 10_000_000


def test_publisher_liveness() -> None:
    import os
    import socket

    here = socket.gethostname()
    assert publisher_alive(f"{here}:{os.getpid()}")
    assert not publisher_alive(f"{here}:{2**22 + 12345}")  # above pid_max: no such process
    assert publisher_alive("another-host:1")


def test_an_event_lost_in_a_crash_is_published_again(db_url: str) -> None:
    async def body(storage: Storage) -> None:
        await storage.create_player("p1", "EUR", 0)
        clock, tracker, sent = Clock(1_700_000_000_000_000), PublishTracker(), CapturingBus()
        wallet = WalletService(storage, None, sent, clock, tracker)
        await wallet.execute(Deposit("d1", "p1", 1_000, instrument="card-1", device="dev-1"))
        await wallet.execute(Bet("b1", "p1", "r1", "g", 100, device="dev-1", jackpot_bp=100))
        marks = EventMarks(storage, tracker, sent, clock, "crashed", margin_us=0)
        await marks.save()  # nothing in flight: the mark is past both operations
        # the process now hangs after committing, before the broker has the event...
        dying = CapturingBus(hang=True)
        wallet.bus = dying
        task = asyncio.create_task(wallet.execute(
            Deposit("d2", "p1", 500, instrument="card-2", device="dev-2")))
        await dying.blocked.wait()
        assert (await storage.get_player("p1")).balance == 1_400  # committed
        await marks.save()  # ...its mark trails the operation in flight...
        task.cancel()  # ...and it is killed
        wallet.bus = sent
        await wallet.execute(Rollback("rb1", "p1", "r1", "b1"))
        assert [e.transaction_id for e in sent.events] == ["d1", "b1", "rb1"]

        fresh = CapturingBus()
        assert await recover_events(storage, fresh, alive=lambda p: p == "alive") == 2
        assert [e.transaction_id for e in fresh.events] == ["d2", "rb1"]
        d2 = fresh.events[0]
        assert (d2.kind, d2.amount, d2.instrument, d2.device) == ("deposit", 500, "card-2",
                                                                  "dev-2")
        assert fresh.events[1] == sent.events[2]  # the same event, so the same event id
        assert await storage.relay_marks() == {}
        assert await recover_events(storage, CapturingBus(), alive=lambda p: False) == 0

    run(db_url, body)


def test_recovered_events_equal_the_published_ones(db_url: str) -> None:
    async def body(storage: Storage) -> None:
        await storage.create_player("p1", "EUR", 0)
        sent = CapturingBus()
        wallet = WalletService(storage, None, sent, Clock(5_000_000))
        await wallet.execute(Deposit("d1", "p1", 900, instrument="iban-1"))
        for i in range(7):  # fast-path bets, with and without device and jackpot share
            await wallet.execute(Bet(f"b{i}", "p1", f"r{i}", "g", 10 + i,
                                     device=f"d{i % 2}" if i % 3 else None,
                                     jackpot_bp=250 * (i % 2)))
        await wallet.execute(Rollback("rb", "p1", "r3", "b3"))
        await wallet.execute(Rollback("rb-unknown", "p1", "r9", "never-seen"))  # tombstone
        rows, after = [], None
        while page := await storage.committed_since(0, after, limit=3):
            rows += page
            after = (page[-1].ts_us, page[-1].transaction_id)
        assert [event_of(tx) for tx in rows] == sent.events

    run(db_url, body)


def test_a_clean_stop_forgets_the_mark_and_a_dirty_one_keeps_it(db_url: str) -> None:
    async def body(storage: Storage) -> None:
        tracker = PublishTracker()
        marks = EventMarks(storage, tracker, CapturingBus(), Clock(1_000_000), "h:7",
                           interval_s=0.01)
        await marks.start()
        await asyncio.sleep(0.05)
        assert "h:7" in await storage.relay_marks()
        await marks.stop()
        assert await storage.relay_marks() == {}
        backlog = CapturingBus(unsent=3.0)
        dirty = EventMarks(storage, tracker, backlog, Clock(9_000_000), "h:8", margin_us=0)
        await dirty.start()
        await dirty.stop()
        assert await storage.relay_marks() == {"h:8": 3_000_000}

    run(db_url, body)


# ---------------------------------------------------------------- end to end, real processes

E2E_PLAYERS, E2E_CLIENTS, E2E_BETS = 6, 12, 50


async def _bets_across_a_kill(server: Server, service: str) -> dict[str, int]:
    """Concurrent bets (new ids, retried with the same id until answered) while ``service``
    is killed with -9 and restarted; returns the acknowledged bets: id -> amount."""
    history = History()
    async with httpx.AsyncClient(base_url=server.url, timeout=10, auth=server.auth) as client:
        for k in range(E2E_PLAYERS):
            assert (await client.post("/players", json={"player_id": f"p{k}",
                                                        "currency": "EUR"})).status_code == 201
            await send(client, f"/players/p{k}/deposits",
                       {"transaction_id": f"dep-{k}", "amount": 10**9}, history)
    acked: dict[str, int] = {}

    async def client_loop(c: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10, auth=server.auth) as client:
            for i in range(E2E_BETS):
                body = {"transaction_id": f"b-{c}-{i}", "player_id": f"p{c % E2E_PLAYERS}",
                        "round_id": f"r-{c}-{i}", "game_id": "g", "amount": 1 + i % 7}
                status, _ = await send(client, "/wallet/bet", body, history)
                assert status == 200
                acked[body["transaction_id"]] = body["amount"]

    tasks = [asyncio.create_task(client_loop(c)) for c in range(E2E_CLIENTS)]
    while len(acked) < E2E_CLIENTS * E2E_BETS // 3:
        await asyncio.sleep(0.01)
    killed = await asyncio.to_thread(server.kill9_service, service)
    await asyncio.to_thread(wait_restarted, server, service, killed)
    await asyncio.gather(*tasks)
    assert history.retried > 0, "the kill must have interrupted some requests"
    return acked


@pytest.mark.e2e
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("topology", "service"), [("microservices", "wallet"),
                                                   ("hybrid", "edge")])
def test_every_acknowledged_bet_reaches_the_consumers_once_across_a_kill9(
    topology: str, service: str, tmp_path: Path,
) -> None:
    """Requests cut by the kill were committed but never published: their retry is a replay
    (which publishes nothing), so only the recovery on restart gets their events out."""
    db = f"sqlite:///{tmp_path / 'wallet.db'}"
    server = Server(db, topology, credentials=write_credentials(tmp_path))
    server.start()
    try:
        acked = asyncio.run(_bets_across_a_kill(server, service))
        deadline = time.monotonic() + 30
        while True:
            summary = httpx.get(f"{server.url}/analytics/summary", timeout=5,
                                auth=server.auth).json()
            seen = summary["events"].get("bet", 0)
            if seen >= len(acked) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == len(acked), f"{len(acked) - seen} acknowledged bets never reached " \
                                   "analytics" if seen < len(acked) else "duplicates counted"
        assert summary["amounts"]["bet"] == sum(acked.values())
        assert summary["events"]["deposit"] == E2E_PLAYERS
    finally:
        server.stop()
        purge_broker(db)
