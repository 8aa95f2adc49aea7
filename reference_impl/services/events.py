"""The event bus between components: in-process for the monolith, a broker elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from reference_impl.rules import MoneyEvent

Handler = Callable[[MoneyEvent], Awaitable[None]]
log = logging.getLogger(__name__)
MAX_QUEUED_EVENTS = 100_000
"""Most events waiting for the in-process consumers (~1 KB each)."""


class EventBus(Protocol):
    """Publish domain events (bet placed, deposit made...); consumers subscribe."""

    def subscribe(self, name: str, handler: Handler) -> None:
        """Register a consumer (its name is its consumer group on a broker)."""
        ...

    async def publish(self, event: MoneyEvent) -> None:
        """Hand an event to the bus (at least once to every consumer)."""
        ...

    async def start(self) -> None:
        """Start delivering."""
        ...

    async def stop(self) -> None:
        """Deliver what is queued, then stop."""
        ...


class InProcessEventBus:
    """A bounded asyncio queue and one delivery task.

    Publishing does not wait for the consumers while fewer than ``limit`` events are queued;
    **when the queue is full, a publisher waits for room** (the money answers slow down to
    the consumers' pace; nothing is dropped). The delivery task takes what is queued in one
    batch, so at most ``2 * limit`` events are held in memory.
    """

    def __init__(self, limit: int = MAX_QUEUED_EVENTS) -> None:
        if limit < 1:
            raise ValueError(f"queue limit must be >= 1, got {limit}")
        self._handlers: list[tuple[str, Handler]] = []
        self._queue: asyncio.Queue[MoneyEvent | None] = asyncio.Queue(limit)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    def subscribe(self, name: str, handler: Handler) -> None:
        """Register a consumer."""
        self._handlers.append((name, handler))

    async def publish(self, event: MoneyEvent) -> None:
        """Queue the event (waiting for room when the queue is full)."""
        await self._queue.put(event)

    async def start(self) -> None:
        """Start the delivery task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Drain the queue and stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def drain(self) -> None:
        """Wait until every queued event was delivered."""
        await self._queue.join()

    async def _run(self) -> None:
        """Deliver events in order; one wake-up takes every event queued by then."""
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            try:
                for event in batch:
                    if event is None:
                        return
                    await self._deliver(event)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _deliver(self, event: MoneyEvent) -> None:
        """Hand one event to every consumer."""
        for name, handler in self._handlers:
            try:
                await handler(event)
            except Exception:  # a failing consumer must not stop the others
                log.exception("consumer %s failed on %s", name, event.kind)
        self.delivered += 1
