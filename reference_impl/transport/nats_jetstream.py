"""An :class:`EventBus` over NATS JetStream (``--broker nats://...``), same contract as the
Redis Streams bus: every subscription name is a durable pull consumer that sees every event,
entries are acknowledged after their handler returned, redelivered after ``ack_wait_s`` when
a consumer died before acknowledging, retried up to ``max_deliveries`` times and then
published to ``<prefix>.dead``. Publishing sets ``Nats-Msg-Id`` (server-side deduplication
within the stream's window) and consumers skip event ids their group already handled (a
key-value bucket with a TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re

import nats
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from reference_impl.rules import MoneyEvent
from reference_impl.services.events import Handler
from reference_impl.transport.backlog import PublishBacklog
from reference_impl.transport.codec import EXCLUSION, MONEY, Envelope
from reference_impl.transport.redis_streams import BusStats, ExclusionHandler

log = logging.getLogger(__name__)


class NatsJetStreamEventBus:
    """Publish domain events to a JetStream stream; deliver them to durable consumers."""

    def __init__(
        self, url: str, prefix: str, consumer: str, *, max_msgs: int = 1_000_000,
        batch: int = 128, fetch_timeout_s: float = 0.5, ack_wait_s: float = 5.0,
        max_deliveries: int = 5, seen_ttl_s: int = 86_400, stop_grace_s: float = 5.0,
    ) -> None:
        token = re.sub(r"[^A-Za-z0-9_-]", "_", prefix)
        self.url, self.consumer = url, consumer
        self.stream_name, self.bucket = token, f"{token}_seen"
        self.subject, self.dead_subject = f"{token}.events", f"{token}.dead"
        self.max_msgs, self.batch, self.fetch_timeout_s = max_msgs, batch, fetch_timeout_s
        self.ack_wait_s, self.max_deliveries = ack_wait_s, max_deliveries
        self.seen_ttl_s, self.stop_grace_s = seen_ttl_s, stop_grace_s
        self.stats = BusStats()
        self._nc: nats.NATS | None = None
        self._js: nats.js.JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._money: dict[str, Handler] = {}
        self._exclusion: dict[str, ExclusionHandler] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._backlog = PublishBacklog(
            self._publish, (TimeoutError, NatsError, OSError), on_size=self.stats.set_backlog)
        self._side_tasks: set[asyncio.Task[None]] = set()

    # ---- consumers ----
    def subscribe(self, name: str, handler: Handler) -> None:
        """Deliver money events to ``handler`` through the durable consumer ``name``."""
        self._money[name] = handler

    def subscribe_exclusions(self, name: str, handler: ExclusionHandler) -> None:
        """Deliver self-exclusion notices through the durable consumer ``name``."""
        self._exclusion[name] = handler

    # ---- producers ----
    async def publish(self, event: MoneyEvent) -> None:
        """Publish the event (kept in a local backlog, retried, when NATS is unreachable)."""
        await self._backlog.send(Envelope.money(event))

    async def publish_exclusion(self, player_id: str, until: float | None) -> None:
        """Publish a self-exclusion notice."""
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

    async def _publish(self, envelope: Envelope) -> None:
        js = await self._connect()
        await js.publish(self.subject, envelope.to_bytes(), timeout=2.0,
                         headers={"Nats-Msg-Id": envelope.id})
        self.stats.published += 1

    async def _connect(self) -> nats.js.JetStreamContext:
        if self._js is not None:
            return self._js
        nc = await nats.connect(self.url, connect_timeout=2, max_reconnect_attempts=-1,
                                allow_reconnect=True)
        js = nc.jetstream()
        try:
            await js.stream_info(self.stream_name)
        except NotFoundError:
            await js.add_stream(name=self.stream_name,
                                subjects=[self.subject, self.dead_subject],
                                max_msgs=self.max_msgs, duplicate_window=120.0)
        self._kv = await js.create_key_value(bucket=self.bucket, ttl=self.seen_ttl_s)
        self._nc, self._js = nc, js
        return js

    # ---- life cycle ----
    async def start(self) -> None:
        """Connect, create the stream and durable consumers, start their readers."""
        self._stopping.clear()
        js = await self._connect()
        for name in sorted(set(self._money) | set(self._exclusion)):
            config = api.ConsumerConfig(
                ack_policy=api.AckPolicy.EXPLICIT, deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=self.ack_wait_s, max_deliver=-1, filter_subject=self.subject,
            )
            sub = await js.pull_subscribe(self.subject, durable=name, stream=self.stream_name,
                                          config=config)
            self._tasks.append(asyncio.create_task(self._consume(name, sub)))

    async def stop(self) -> None:
        """Let readers finish their batch, cancel the rest, flush the backlog once, close."""
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
        if self._nc is not None:
            with contextlib.suppress(NatsError):
                await self._nc.close()
        self._nc = self._js = self._kv = None

    async def purge(self) -> None:
        """Delete this bus's stream and seen bucket (tests, resets)."""
        js = await self._connect()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(self.stream_name)
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(self.bucket)

    # ---- delivery ----
    async def _consume(self, name: str, sub: nats.js.JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(self.batch, timeout=self.fetch_timeout_s)
            except NatsTimeout:
                continue
            except (NatsError, OSError) as exc:
                log.warning("consumer %s: broker error %s; retrying", name, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._deliver(name, msg)

    async def _deliver(self, name: str, msg: nats.aio.msg.Msg) -> None:
        try:
            env = Envelope.from_bytes(msg.data)
        except ValueError:
            await self._dead(name, msg)
            return
        assert self._kv is not None
        key = f"{name}.{hashlib.sha1(env.id.encode()).hexdigest()}"
        try:
            await self._kv.get(key)
            self.stats.duplicates += 1
            await msg.ack()
            return
        except KeyNotFoundError:
            pass
        try:
            await self._dispatch(name, env)
        except Exception:
            self.stats.failures += 1
            log.exception("consumer %s: handler failed on %s", name, env.id)
            if msg.metadata.num_delivered >= self.max_deliveries:
                await self._dead(name, msg)
            else:
                await msg.nak(delay=min(self.ack_wait_s, 0.2 * msg.metadata.num_delivered))
            return
        await self._kv.put(key, b"1")
        await msg.ack()
        self.stats.delivered += 1

    async def _dispatch(self, name: str, env: Envelope) -> None:
        if env.type == MONEY and name in self._money:
            await self._money[name](env.money_event())
        elif env.type == EXCLUSION and name in self._exclusion:
            until = env.data.get("until")
            self._exclusion[name](str(env.data["player_id"]),
                                  None if until is None else float(until))

    async def _dead(self, name: str, msg: nats.aio.msg.Msg) -> None:
        js = await self._connect()
        await js.publish(self.dead_subject, msg.data, headers={"X-Consumer": name})
        await msg.term()
        self.stats.dead_lettered += 1
