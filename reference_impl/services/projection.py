"""State built from the event stream survives restarts: rebuilt from the database on start.

Fraud windows, link indexes, cooldowns and analytics totals are projections of the money
events. Every event is also a row in the database (``txs`` for operations,
``declined_deposits`` for refused deposits), so a starting consumer replays the rows of the
span its state covers (:meth:`Storage.committed_since`) before it takes live events, and the
:class:`ReplayFence` drops the live events that the replay already counted (a broker
redelivering what the previous process had not acknowledged, or the event of an operation
that committed while the replay read).

An event stamped before the fence's cut may still commit after the replay's read (it was in
flight): it is counted live. ``FENCE_MARGIN_US`` bounds how long such an operation may stay
in flight; events older than the cut by more than that are taken as replayed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from reference_impl.rules import MoneyEvent
from reference_impl.services.event_recovery import event_of
from reference_impl.storage import Storage

US = 1_000_000
FENCE_MARGIN_US = 60 * US
"""Longest time an operation stays between its timestamp and its commit (retries included)."""
REPLAY_PAGE = 5_000
"""Rows read per page of a replay."""
log = logging.getLogger(__name__)


class ReplayFence:
    """Where a replayed projection meets the live stream: is a live event new to it?"""

    def __init__(self, cut_us: int, recent: set[tuple[str, str]]) -> None:
        self.cut_us, self.recent = cut_us, recent

    def is_new(self, event: MoneyEvent) -> bool:
        """True unless the replay already counted ``event``."""
        if event.transaction_id is None:
            return True
        ts_us = round(event.ts * US)
        if ts_us >= self.cut_us:
            return True
        if ts_us < self.cut_us - FENCE_MARGIN_US:
            return False
        return (event.kind, event.transaction_id) not in self.recent


async def replay(
    storage: Storage, since_us: int, cut_us: int,
    apply: Callable[[MoneyEvent], Awaitable[None]],
) -> ReplayFence:
    """Feed ``apply`` the events of every row stamped in [since_us, cut_us), in time order;
    return the fence for the live events that follow."""
    recent: set[tuple[str, str]] = set()
    after: tuple[int, str] | None = None
    replayed = 0
    while True:
        rows = await storage.committed_since(since_us, after, REPLAY_PAGE)
        for tx in rows:
            if tx.ts_us >= cut_us:
                return _done(cut_us, recent, replayed)
            await apply(event_of(tx))
            replayed += 1
            if tx.ts_us >= cut_us - FENCE_MARGIN_US:
                recent.add((tx.kind, tx.transaction_id))
        if len(rows) < REPLAY_PAGE:
            return _done(cut_us, recent, replayed)
        after = (rows[-1].ts_us, rows[-1].transaction_id)


def _done(cut_us: int, recent: set[tuple[str, str]], replayed: int) -> ReplayFence:
    log.info("replayed %d events up to %d", replayed, cut_us)
    return ReplayFence(cut_us, recent)


TAIL_INTERVAL_S = 0.25
"""Pause between two reads of a database tail."""
TAIL_MARGIN_US = 2 * US
"""How far behind the newest row a tail re-reads, for operations that commit after a later
stamped one: an operation longer than this between its timestamp and its commit is missed
by the tails (a restart's rebuild counts it)."""


async def follow(
    storage: Storage, fence: ReplayFence, apply: Callable[[MoneyEvent], Awaitable[None]],
    interval_s: float = TAIL_INTERVAL_S,
) -> None:
    """Feed ``apply`` every row committed after the replay ``fence``, forever, by reading the
    database every ``interval_s`` (used when several processes must see every event: each
    follows the database instead of its own in-process bus)."""
    seen: dict[tuple[str, str], int] = {key: fence.cut_us for key in fence.recent}
    newest = fence.cut_us
    while True:
        after: tuple[int, str] | None = None
        start = newest - TAIL_MARGIN_US
        while True:
            rows = await storage.committed_since(start, after, REPLAY_PAGE)
            for tx in rows:
                key = (tx.kind, tx.transaction_id)
                if key in seen or tx.ts_us < fence.cut_us - FENCE_MARGIN_US:
                    continue
                if tx.ts_us < fence.cut_us and key in fence.recent:
                    continue
                seen[key] = tx.ts_us
                newest = max(newest, tx.ts_us)
                await apply(event_of(tx))
            if len(rows) < REPLAY_PAGE:
                break
            after = (rows[-1].ts_us, rows[-1].transaction_id)
        horizon = newest - TAIL_MARGIN_US
        for key in [k for k, ts in seen.items() if ts < horizon]:
            del seen[key]
        await asyncio.sleep(interval_s)
