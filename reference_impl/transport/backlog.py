"""The publish backlog shared by the broker buses (Redis Streams, NATS JetStream).

A publisher hands each event to the broker at once; while the broker is unreachable, events
wait here, in order, and one flusher task retries the oldest every ``retry_s`` until it goes
through. A new event queues behind waiting ones (never overtakes them).

Bounded: at most ``limit`` events (``MAX_BACKLOG``) wait. **When full, a publisher waits for
room** (the wallet's answers slow down to the broker's pace; nothing is dropped, and the
event-recovery mark stays behind the oldest waiting event, so a crash meanwhile loses none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from reference_impl.transport.codec import Envelope, oldest_money_ts

MAX_BACKLOG = 100_000
"""Most events waiting for an unreachable broker in one process (~1 KB each)."""
RETRY_S = 0.5
"""Pause between two attempts of the flusher while the broker stays unreachable."""
log = logging.getLogger(__name__)


class PublishBacklog:
    """Send envelopes through ``publish``; keep those that fail with ``errors`` for retry."""

    def __init__(
        self, publish: Callable[[Envelope], Awaitable[None]],
        errors: tuple[type[BaseException], ...], *, limit: int = MAX_BACKLOG,
        retry_s: float = RETRY_S, on_size: Callable[[int], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"backlog limit must be >= 1, got {limit}")
        self._publish, self.errors, self.limit, self.retry_s = publish, errors, limit, retry_s
        self._on_size = on_size
        self._items: deque[Envelope] = deque()
        self._room = asyncio.Condition()
        self._flusher: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    async def send(self, envelope: Envelope) -> None:
        """Publish now, or queue behind the waiting events (waiting for room when full)."""
        if not self._items:
            try:
                await self._publish(envelope)
                return
            except self.errors as exc:
                log.warning("broker unreachable (%s): event %s kept for retry", exc,
                            envelope.id)
        async with self._room:
            await self._room.wait_for(lambda: len(self._items) < self.limit)
            self._items.append(envelope)
        assert len(self._items) <= self.limit
        self._sized()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self, once: bool = False) -> None:
        """Send the waiting events in order; retry while the broker is away (``once``:
        return at the first failure)."""
        while self._items:
            try:
                await self._publish(self._items[0])
            except self.errors:
                if once:
                    return
                await asyncio.sleep(self.retry_s)
                continue
            self._items.popleft()
            self._sized()
            async with self._room:
                self._room.notify()

    def _sized(self) -> None:
        if self._on_size is not None:
            self._on_size(len(self._items))

    def oldest_unsent_ts(self) -> float | None:
        """Timestamp of the oldest money event still waiting."""
        return oldest_money_ts(self._items)

    async def close(self) -> None:
        """Stop the flusher, try the waiting events once more, report what is left."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush(once=True)
        if self._items:
            log.error("%d events could not reach the broker", len(self._items))
