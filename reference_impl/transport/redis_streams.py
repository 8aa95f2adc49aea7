"""An :class:`EventBus` over Redis Streams: consumer groups, at-least-once, idempotent consumers.

Publishing is one XADD to ``<prefix>:events`` (trimmed to about ``maxlen`` entries). Every
subscription name is a consumer group that sees every event; its reader:

1. re-reads its own pending entries first (delivered before a crash, never acknowledged);
2. every ``claim_idle_ms`` claims entries left pending that long by anyone (XAUTOCLAIM): a
   dead consumer's, or its own failed ones, which are retried up to ``max_deliveries`` times
   and then moved to ``<prefix>:dead``;
3. reads new entries (XREADGROUP ``>``) in batches.

An entry is acknowledged only after its handler returned, together with a ``seen`` key for
its event id (MULTI: SET + XACK); an entry whose event id was already seen by the group is
acknowledged without running the handler, so duplicates (redelivery, republishing) have one
effect. A crash between the handler and that MULTI re-runs the handler once more: consumers
whose effects live elsewhere see at-least-once there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from reference_impl.rules import MoneyEvent
from reference_impl.services.events import Handler
from reference_impl.transport.backlog import PublishBacklog
from reference_impl.transport.codec import EXCLUSION, MONEY, Envelope

log = logging.getLogger(__name__)
ExclusionHandler = Callable[[str, float | None], None]
Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass
class _Group:
    name: str
    money: Handler | None = None
    exclusion: ExclusionHandler | None = None
    failures: Counter[bytes] = field(default_factory=Counter)


@dataclass
class BusStats:
    """What a bus did since it started (per process)."""

    published: int = 0
    delivered: int = 0
    duplicates: int = 0
    failures: int = 0
    dead_lettered: int = 0
    backlog: int = 0

    def set_backlog(self, size: int) -> None:
        """Events waiting in the publish backlog."""
        self.backlog = size


class RedisStreamsEventBus:
    """Publish domain events to a Redis stream; deliver them to subscribed consumer groups."""

    def __init__(
        self, url: str, prefix: str, consumer: str, *, maxlen: int = 1_000_000,
        batch: int = 128, block_ms: int = 500, claim_idle_ms: int = 5_000,
        max_deliveries: int = 5, seen_ttl_s: int = 86_400, stop_grace_s: float = 5.0,
    ) -> None:
        self.url, self.prefix, self.consumer = url, prefix, consumer
        self.stream, self.dead_stream = f"{prefix}:events", f"{prefix}:dead"
        self.maxlen, self.batch, self.block_ms = maxlen, batch, block_ms
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self.seen_ttl_s, self.stop_grace_s = seen_ttl_s, stop_grace_s
        self.stats = BusStats()
        self._redis: aioredis.Redis = aioredis.Redis.from_url(url)
        self._groups: dict[str, _Group] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._backlog = PublishBacklog(
            self._xadd, (RedisError,), on_size=self.stats.set_backlog)
        self._side_tasks: set[asyncio.Task[None]] = set()

    # ---- consumers ----
    def subscribe(self, name: str, handler: Handler) -> None:
        """Deliver money events to ``handler`` in consumer group ``name``."""
        self._groups.setdefault(name, _Group(name)).money = handler

    def subscribe_exclusions(self, name: str, handler: ExclusionHandler) -> None:
        """Deliver self-exclusion notices (player, until or None) in group ``name``."""
        self._groups.setdefault(name, _Group(name)).exclusion = handler

    # ---- producers ----
    async def publish(self, event: MoneyEvent) -> None:
        """XADD the event (kept in a local backlog, retried, when Redis is unreachable)."""
        await self._backlog.send(Envelope.money(event))

    async def publish_exclusion(self, player_id: str, until: float | None) -> None:
        """XADD a self-exclusion notice."""
        await self._backlog.send(Envelope.exclusion(player_id, until))

    def oldest_unsent_ts(self) -> float | None:
        """Timestamp of the oldest money event still in the local backlog (broker away)."""
        return self._backlog.oldest_unsent_ts()

    def exclusion_notifier(self) -> ExclusionHandler:
        """A synchronous callback (as PlayerService takes) that publishes in the background."""

        def notify(player_id: str, until: float | None) -> None:
            task = asyncio.get_running_loop().create_task(
                self.publish_exclusion(player_id, until))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

        return notify

    async def _xadd(self, envelope: Envelope) -> None:
        await self._redis.xadd(self.stream, envelope.to_fields(),  # type: ignore[arg-type]
                               maxlen=self.maxlen, approximate=True)
        self.stats.published += 1

    # ---- life cycle ----
    async def start(self) -> None:
        """Create the consumer groups (from the stream's start) and start their readers."""
        self._stopping.clear()
        for group in self._groups.values():
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                await self._redis.xgroup_create(self.stream, group.name, id="0", mkstream=True)
            self._tasks.append(asyncio.create_task(self._consume(group)))

    async def stop(self) -> None:
        """Let readers finish their batch (``stop_grace_s``), cancel the rest (unacknowledged
        entries are redelivered later), flush the publish backlog once, disconnect."""
        self._stopping.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.stop_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
        if self._side_tasks:
            await asyncio.gather(*self._side_tasks, return_exceptions=True)
        await self._backlog.close()
        await self._redis.aclose()

    async def purge(self) -> None:
        """Delete this bus's stream, dead letters and seen keys (tests, resets)."""
        keys = [k async for k in self._redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        if keys:
            await self._redis.delete(*keys)

    # ---- delivery ----
    async def _consume(self, group: _Group) -> None:
        own_cursor: bytes | None = b"0"
        last_claim = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                if own_cursor is not None:  # our own pending entries, left by a crash
                    entries = await self._read(group, own_cursor, block=None)
                    own_cursor = entries[-1][0] if entries else None
                elif loop.time() - last_claim >= self.claim_idle_ms / 1000:
                    last_claim = loop.time()
                    entries = await self._claim(group)
                else:
                    entries = await self._read(group, b">", block=self.block_ms)
                if entries:
                    await self._deliver(group, entries)
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                log.warning("group %s: broker error %s; retrying", group.name, exc)
                await asyncio.sleep(0.5)

    async def _read(self, group: _Group, cursor: bytes, block: int | None) -> list[Entry]:
        answer = await self._redis.xreadgroup(
            group.name, self.consumer, {self.stream: cursor}, count=self.batch, block=block)
        if not answer:
            return []
        entries: list[Entry] = answer[0][1]
        return entries

    async def _claim(self, group: _Group) -> list[Entry]:
        claimed: list[Entry] = []
        start: bytes = b"0-0"
        while True:
            cursor, entries, _deleted = await self._redis.xautoclaim(
                self.stream, group.name, self.consumer, min_idle_time=self.claim_idle_ms,
                start_id=start, count=self.batch)
            claimed.extend(entries)
            if cursor in (b"0-0", "0-0") or len(claimed) >= self.batch:
                return claimed
            start = cursor

    async def _deliver(self, group: _Group, entries: list[Entry]) -> None:
        parsed: list[tuple[bytes, Envelope | None]] = []
        for msg_id, fields in entries:
            try:
                parsed.append((msg_id, Envelope.from_fields(fields) if fields else None))
            except ValueError:
                log.error("group %s: malformed entry %s dead-lettered", group.name, msg_id)
                await self._dead(group, msg_id, fields)
        ids = [env.id for _, env in parsed if env is not None]
        async with self._redis.pipeline(transaction=False) as pipe:
            for eid in ids:
                pipe.exists(self._seen(group, eid))
            seen_flags = await pipe.execute() if ids else []
        seen = {eid for eid, flag in zip(ids, seen_flags, strict=True) if flag}
        done: list[bytes] = []
        newly_seen: list[str] = []
        for msg_id, env in parsed:
            if env is None:  # trimmed away before it was read again
                done.append(msg_id)
                continue
            if env.id in seen:
                self.stats.duplicates += 1
                done.append(msg_id)
                continue
            try:
                await self._dispatch(group, env)
            except Exception:
                self.stats.failures += 1
                group.failures[msg_id] += 1
                log.exception("group %s: handler failed on %s", group.name, env.id)
                if group.failures[msg_id] >= self.max_deliveries:
                    await self._dead(group, msg_id, {b"data": env.to_bytes()})
                    del group.failures[msg_id]
                continue
            group.failures.pop(msg_id, None)
            self.stats.delivered += 1
            seen.add(env.id)
            newly_seen.append(env.id)
            done.append(msg_id)
        if not done:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for eid in newly_seen:
                pipe.set(self._seen(group, eid), b"1", ex=self.seen_ttl_s)
            pipe.xack(self.stream, group.name, *done)
            await pipe.execute()

    async def _dispatch(self, group: _Group, env: Envelope) -> None:
        if env.type == MONEY and group.money is not None:
            await group.money(env.money_event())
        elif env.type == EXCLUSION and group.exclusion is not None:
            until = env.data.get("until")
            group.exclusion(str(env.data["player_id"]), None if until is None else float(until))

    async def _dead(self, group: _Group, msg_id: bytes, fields: dict[bytes, bytes]) -> None:
        entry: dict[Any, Any] = {b"group": group.name.encode(), b"entry": msg_id, **fields}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_stream, entry, maxlen=100_000, approximate=True)
            pipe.xack(self.stream, group.name, msg_id)
            await pipe.execute()
        self.stats.dead_lettered += 1

    def _seen(self, group: _Group, event_id: str) -> str:
        return f"{self.prefix}:seen:{group.name}:{event_id}"
