"""Events of committed operations survive a crash between the commit and the publish.

A money operation commits in the database, then its event goes to the broker: a process
killed in between would lose the event (never the money). Each publishing process keeps a
*mark* in the database, refreshed every second: a time before which every operation it
committed has had its event handed to the broker (it trails the oldest operation still in
flight and the oldest event waiting in the bus's local backlog, minus a margin). A publisher
stopping cleanly deletes its mark. On start, a publisher re-publishes every operation
committed since the marks of publishers that died (their process is gone) and forgets those
marks; consumers drop what they already had by event id, so delivery stays at least once
with one effect. Refused deposits (``deposit_declined``) leave no row and are not recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable

from reference_impl.rules import MoneyEvent
from reference_impl.services.clock import Clock, system_clock
from reference_impl.services.events import EventBus
from reference_impl.storage import CommittedTx, Storage

US = 1_000_000
log = logging.getLogger(__name__)


class PublishTracker:
    """Timestamps (us) of the operations between their start and their event's hand-over."""

    def __init__(self) -> None:
        self._inflight: Counter[int] = Counter()

    def begin(self, ts_us: int) -> None:
        """An operation stamped ``ts_us`` started."""
        self._inflight[ts_us] += 1

    def end(self, ts_us: int) -> None:
        """It ended: refused, or its event handed to the bus."""
        left = self._inflight[ts_us] - 1
        if left > 0:
            self._inflight[ts_us] = left
        else:
            del self._inflight[ts_us]

    def oldest(self) -> int | None:
        """The oldest operation still in flight, None when there is none."""
        return min(self._inflight) if self._inflight else None


def publisher_id() -> str:
    """This process as a publisher: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def publisher_alive(publisher: str) -> bool:
    """False only when ``publisher`` ran on this host and its process is gone."""
    host, _, pid = publisher.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's process: it recovers its own marks
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EventMarks:
    """Keeps this publisher's mark in the database while the process serves."""

    def __init__(
        self, storage: Storage, tracker: PublishTracker, bus: EventBus,
        clock: Clock = system_clock, publisher: str | None = None, interval_s: float = 1.0,
        margin_us: int = US,
    ) -> None:
        self.storage, self.tracker, self.bus, self.clock = storage, tracker, bus, clock
        self.publisher = publisher or publisher_id()
        self.interval_s, self.margin_us = interval_s, margin_us
        self._task: asyncio.Task[None] | None = None

    def watermark(self) -> int:
        """Every operation this process committed before this time had its event handed
        over (read ``now`` first: an operation starting later is stamped later)."""
        candidates = [self.clock()]
        oldest = self.tracker.oldest()
        if oldest is not None:
            candidates.append(oldest)
        backlog = getattr(self.bus, "oldest_unsent_ts", None)
        unsent = backlog() if backlog is not None else None
        if unsent is not None:
            candidates.append(int(unsent * US))
        return min(candidates) - self.margin_us

    async def save(self) -> None:
        """Store the current watermark."""
        await self.storage.save_relay_mark(self.publisher, self.watermark())

    async def start(self) -> None:
        """Save now, then every ``interval_s``."""
        await self.save()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.save()
            except Exception as exc:  # the database may be briefly away: keep serving
                log.warning("could not save the event mark: %s", exc)

    async def stop(self) -> None:
        """Stop refreshing; delete the mark when nothing is left to hand over, else save it
        (call after the bus delivered its backlog)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        backlog = getattr(self.bus, "oldest_unsent_ts", None)
        if self.tracker.oldest() is None and (backlog is None or backlog() is None):
            await self.storage.delete_relay_marks([self.publisher])
        else:
            await self.save()


def event_of(tx: CommittedTx) -> MoneyEvent:
    """The event the wallet published for ``tx`` (a rollback's event carries no amount)."""
    return MoneyEvent(
        kind=tx.kind,  # type: ignore[arg-type]
        player_id=tx.player_id, amount=0 if tx.kind == "rollback" else tx.amount,
        ts=tx.ts_us / US, transaction_id=tx.transaction_id, round_id=tx.round_id or None,
        instrument=tx.instrument, device=tx.device,
    )


async def recover_events(
    storage: Storage, bus: EventBus, alive: Callable[[str], bool] = publisher_alive,
    page: int = 5_000,
) -> int:
    """Re-publish what dead publishers may not have handed over; return events published."""
    marks = await storage.relay_marks()
    dead = {p: ts for p, ts in marks.items() if not alive(p)}
    if not dead:
        return 0
    start, published = min(dead.values()), 0
    after: tuple[int, str] | None = None
    while True:
        rows = await storage.committed_since(start, after, page)
        for tx in rows:
            await bus.publish(event_of(tx))
        published += len(rows)
        if len(rows) < page:
            break
        after = (rows[-1].ts_us, rows[-1].transaction_id)
    await storage.delete_relay_marks(sorted(dead))
    log.warning("re-published %d events committed since the marks of %s", published,
                ", ".join(sorted(dead)))
    return published
