"""The RabbitMQ side of the amqp backend: one robust connection, confirmed publishes,
per-queue consumers feeding local buffers, and the deliveries held while jobs run.

Why it is built this way:

* **Notifications, not records.** A message says "a job of this queue became ready"
  (its id and due time in the body); the record store decides which job a claim gets.
  A message is therefore never the only copy of anything: losing one costs latency
  (workers also poll every ``idle_wait_s``), never a job.
* **Publisher confirms and persistent messages.** :meth:`Broker.notify` returns once
  the broker has the message on disk (quorum: on a majority). During an outage it waits
  for the robust connection to come back, at most ``publish_timeout``, then raises
  :class:`~shigoto.errors.BackendUnavailable` — it never drops a message silently.
* **Held deliveries.** A claim pairs each leased job with one buffered delivery and
  keeps it unacked until the job's finishing transition, so the channel carries the
  lease: a killed worker's deliveries return to the queue and wake another worker.
  The consumer's ``prefetch`` is the worker's concurrency (the first claim's limit),
  so buffered plus held deliveries never exceed its free slots plus running jobs.
* **Reconnects** are aio-pika's robust connection: backoff, re-declared queues,
  restored consumers. Deliveries of the lost channel are void (the broker has requeued
  them): acking one fails harmlessly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import msgspec
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
from pamqp import commands as spec
from pamqp.commands import Basic

from ...errors import BackendUnavailable, ConfigurationError
from . import pipeline, topology
from .settings import AmqpSettings

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10.0
"""A broker that accepts TCP but never finishes the AMQP handshake must not hang us."""
_CLOSE_TIMEOUT_S = 5.0
_OP_TIMEOUT_S = 10.0
"""One declare, consume or publish confirm; past it the call is retried or reported."""
_PIPELINE = 1000
"""Messages per socket write (a bulk chunk of jobs)."""
_TRANSIENT = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Notice:
    """One ready-job notification to publish."""

    queue: str
    job_id: str
    priority: int = 0
    delay_ms: int = 0
    """> 0: park it in a delay bucket first."""


class Nacked(BackendUnavailable):
    """RabbitMQ refused messages (``basic.nack``): raised at once, never retried."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One persistent message for a shigoto queue's work queue (or, with ``delay_ms``,
    the delay bucket that dead-letters into it at the due time)."""

    queue: str
    body: bytes
    priority: int = 0
    delay_ms: int = 0
    headers: dict[str, Any] | None = None
    amqp_priority: int | None = None
    """The broker priority as it was delivered (overrides ``priority``): a message given
    back unchanged keeps its level."""
    expiration_ms: int | None = None
    """Dropped by the broker if still undelivered after this long. Ignored for a message
    that waits in a delay bucket first: the bucket would dead-letter it early."""


@dataclass(slots=True)
class Buffered:
    delivery: AbstractIncomingMessage
    seq: int
    routed: bool = False
    """It carries a whole job from the topic exchange, not yet in the record store."""


class Broker:
    """RabbitMQ I/O for one backend instance (one event loop)."""

    def __init__(self, settings: AmqpSettings) -> None:
        self.settings = settings
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumer: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._declared: set[str] = set()
        self._consumers: dict[str, AbstractQueue] = {}
        self._tags: dict[str, list[str]] = {}
        """A queue's consumer tags: one, plus one per :meth:`grow_prefetch`."""
        self._window: dict[str, int] = {}
        """A queue's prefetch window: the sum of its consumers' ``basic.qos``."""
        self._buffers: dict[str, deque[Buffered]] = {}
        self._seq = itertools.count()
        self._arrived = asyncio.Event()
        self.prefetch: int | None = None

    # -- connection --------------------------------------------------------------------

    async def connect(self) -> None:
        if self._connection is not None:
            return
        async with self._lock:
            if self._connection is not None:
                return
            try:
                connection = await asyncio.wait_for(
                    aio_pika.connect_robust(self.settings.broker_url), _CONNECT_TIMEOUT_S
                )
            except (*_TRANSIENT, ValueError) as exc:
                raise BackendUnavailable(
                    f"RabbitMQ at {self.settings.redacted} is not reachable: {exc}"
                ) from exc
            connection.reconnect_callbacks.add(self._on_reconnect)
            self._publisher = await connection.channel(publisher_confirms=True)
            self._consumer = await connection.channel()
            self._connection = connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._publisher = self._consumer = None
        self._declared.clear()
        self._consumers.clear()
        self._tags.clear()
        self._window.clear()
        self._buffers.clear()
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), _CLOSE_TIMEOUT_S)
            except _TRANSIENT as exc:
                log.warning("closing the RabbitMQ connection: %r (dropped)", exc)

    def _on_reconnect(self, *_: Any) -> None:
        # Deliveries buffered before the loss stay: claiming with one costs nothing, and
        # its ack fails harmlessly (the broker requeued it when the channel died).
        log.warning("reconnected to RabbitMQ at %s", self.settings.redacted)

    # -- topology ----------------------------------------------------------------------

    async def _declare(self, name: str, arguments: topology.FieldTable) -> AbstractQueue:
        assert self._publisher is not None
        try:
            return await self._publisher.declare_queue(
                name, durable=True, arguments=dict(arguments), timeout=_OP_TIMEOUT_S
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"RabbitMQ queue {name!r} exists with other arguments than {arguments} "
                f"(was it declared quorum vs classic, or another max_priority?): {exc}. "
                "Delete it or change the URL's classic= / max_priority= options"
            ) from exc

    async def declare(self, queue: str) -> None:
        """Declare the work and dead queues of a shigoto queue (once per connection)."""
        await self.connect()
        name = topology.work_queue(self.settings, queue)
        if name in self._declared:
            return
        await self._declare(name, topology.work_arguments(self.settings, queue))
        await self._declare(
            topology.dead_queue(self.settings, queue), topology.dead_arguments(self.settings, queue)
        )
        self._declared.add(name)

    async def _declare_bucket(self, queue: str, bucket_ms: int) -> str:
        name = topology.wait_queue(self.settings, queue, bucket_ms)
        if name not in self._declared:
            await self._declare(name, topology.wait_arguments(self.settings, queue, bucket_ms))
            self._declared.add(name)
        return name

    # -- publishing --------------------------------------------------------------------

    async def notify(self, notices: Iterable[Notice]) -> None:
        """Publish ready-job notifications, each confirmed by the broker. One that no
        consumer takes within ``notice_ttl`` is dropped (see :mod:`.settings`)."""
        await self.publish(
            Outgoing(
                n.queue,
                msgspec.json.encode({"id": n.job_id, "delay_ms": n.delay_ms}),
                n.priority,
                n.delay_ms,
                expiration_ms=self.settings.notice_ttl_ms,
            )
            for n in notices
        )

    async def publish(self, items: Iterable[Outgoing]) -> None:
        """Publish persistent messages to work queues (delayed ones to their bucket) and
        return once the broker confirmed every one.

        Pipelined (:mod:`.pipeline`): each chunk of messages is one socket write, and
        the confirms are awaited together. Messages whose confirm did not come (the
        channel died, no answer in time) are published again, until
        ``publish_timeout``; then :class:`BackendUnavailable` is raised. A nack raises
        at once. Never drops silently; a retried message may be stored twice (at least
        once)."""
        pending = list(items)
        deadline = time.monotonic() + self.settings.publish_timeout_s
        attempt = 0
        while pending:
            try:
                left = max(0.001, deadline - time.monotonic())
                # bounded: during an outage the robust channel waits for the broker
                pending = await asyncio.wait_for(self._publish_batch(pending, deadline), left)
                problem: BaseException | None = None
            except (ConfigurationError, Nacked):
                raise  # a nack is the broker's answer: publishing again would not help
            except _TRANSIENT as exc:
                problem = exc
            if not pending:
                return
            attempt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendUnavailable(
                    f"RabbitMQ at {self.settings.redacted} did not confirm {len(pending)} "
                    f"publish(es) within publish_timeout={self.settings.publish_timeout_s:g}s"
                    f": {problem or 'no confirm in time'!r}. {self._lost_hint()}"
                ) from problem
            if attempt == 1:
                log.warning(
                    "publish to RabbitMQ unconfirmed (%r); retrying %d for %.1fs",
                    problem,
                    len(pending),
                    left,
                )
            await asyncio.sleep(min(left, 0.05 * 2 ** min(attempt, 6)))
            await self._wait_connected(deadline)

    def _lost_hint(self) -> str:
        if self.settings.store_url is None:
            return "Those jobs may not be stored: add them again (store-less: at least once)"
        return (
            "The job is stored in the record store and will still run (workers poll), "
            "but its wake-up was not delivered"
        )

    async def _publish_batch(self, items: list[Outgoing], deadline: float) -> list[Outgoing]:
        """One pass over ``items``: the ones not confirmed (to publish again)."""
        await self.connect()
        targets: dict[tuple[str, int], str] = {}
        messages: list[tuple[str, bytes, spec.Basic.Properties]] = []
        for item in items:
            place = (item.queue, topology.bucket_ms(item.delay_ms) if item.delay_ms > 0 else 0)
            if place not in targets:
                targets[place] = await self._target(item)
            properties = spec.Basic.Properties(
                delivery_mode=2,
                priority=(
                    item.amqp_priority
                    if item.amqp_priority is not None
                    else topology.amqp_priority(self.settings, item.priority)
                ),
                content_type="application/json",
                headers=item.headers,
                expiration=(
                    str(item.expiration_ms)
                    if item.expiration_ms is not None and item.delay_ms <= 0
                    else None
                ),
            )
            messages.append((targets[place], item.body, properties))
        assert self._publisher is not None
        raw = await self._publisher.get_underlay_channel()
        confirms: list[asyncio.Future[Any]] = []
        if pipeline.supported(raw):
            for start in range(0, len(messages), _PIPELINE):
                try:
                    confirms += await pipeline.publish(raw, messages[start : start + _PIPELINE])
                except _TRANSIENT:
                    break  # this chunk and the rest were not written: published again
        else:  # another aiormq: concurrent one-by-one publishes, same confirms
            confirms = [
                asyncio.ensure_future(
                    raw.basic_publish(
                        body, routing_key=key, properties=props, timeout=_OP_TIMEOUT_S
                    )
                )
                for key, body, props in messages
            ]
        if confirms:
            wait_s = max(0.0, min(_OP_TIMEOUT_S, deadline - time.monotonic()))
            await asyncio.wait(confirms, timeout=wait_s)
        again: list[Outgoing] = []
        nacked = 0
        for position, item in enumerate(items):
            confirm = confirms[position] if position < len(confirms) else None
            if confirm is None or not confirm.done() or confirm.cancelled():
                if confirm is not None:
                    confirm.cancel()
                again.append(item)
            elif isinstance(confirm.exception(), DeliveryError):
                nacked += 1
            elif confirm.exception() is not None:
                again.append(item)
        if nacked:
            raise Nacked(
                f"RabbitMQ at {self.settings.redacted} refused (nacked) {nacked} of "
                f"{len(items)} messages. {self._lost_hint()}"
            )
        return again

    async def _target(self, item: Outgoing) -> str:
        """The broker queue ``item`` goes to (declared): its work queue or delay bucket."""
        await self.declare(item.queue)
        if item.delay_ms > 0:
            return await self._declare_bucket(item.queue, topology.bucket_ms(item.delay_ms))
        return topology.work_queue(self.settings, item.queue)

    async def bury(self, queue: str, body: bytes) -> None:
        """Publish a dead job's summary to the queue's ``.dead`` broker queue."""
        message = aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"
        )

        async def route() -> str:
            await self.declare(queue)
            return topology.dead_queue(self.settings, queue)

        await self._publish(route, message, time.monotonic() + self.settings.publish_timeout_s)

    async def _publish(self, route: Any, message: aio_pika.Message, deadline: float) -> None:
        attempt = 0
        while True:
            try:
                routing_key = await route()
                assert self._publisher is not None
                await self._publisher.default_exchange.publish(
                    message, routing_key=routing_key, mandatory=False, timeout=_OP_TIMEOUT_S
                )
                return
            except ConfigurationError:
                raise
            except _TRANSIENT as exc:
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendUnavailable(
                        f"RabbitMQ at {self.settings.redacted} did not confirm a publish "
                        f"within publish_timeout={self.settings.publish_timeout_s:g}s: {exc!r}. "
                        f"{self._lost_hint()}"
                    ) from exc
                if attempt == 1:
                    log.warning("publish to RabbitMQ failed (%r); retrying for %.1fs", exc, left)
                await asyncio.sleep(min(left, 0.05 * 2 ** min(attempt, 6)))
                await self._wait_connected(deadline)

    async def _wait_connected(self, deadline: float) -> None:
        if self._connection is None:
            try:
                await self.connect()
            except BackendUnavailable:
                return
        connection = self._connection
        if connection is None or connection.connected.is_set():
            return
        left = max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.connected.wait(), left)

    # -- routing -----------------------------------------------------------------------

    async def bind(self, queue: str, pattern: str) -> None:
        """Bind a shigoto queue's work queue to the topic exchange under ``pattern``."""
        await self.declare(queue)
        assert self._publisher is not None
        exchange = await self._routes()
        amqp_queue = await self._publisher.get_queue(
            topology.work_queue(self.settings, queue), ensure=False
        )
        await amqp_queue.bind(exchange, routing_key=pattern, timeout=_OP_TIMEOUT_S)

    async def route(self, routing_key: str, job: bytes, priority: int) -> None:
        """Publish an encoded job to the topic exchange; every bound queue gets a copy.

        Unroutable (no queue bound to ``routing_key``): raises ConfigurationError."""
        await self.connect()
        message = aio_pika.Message(
            job,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            priority=topology.amqp_priority(self.settings, priority),
            content_type="application/json",
            headers={topology.ROUTED_HEADER: 1},
        )
        exchange = await self._routes()
        reply = await exchange.publish(
            message, routing_key=routing_key, mandatory=True, timeout=_OP_TIMEOUT_S
        )
        if not isinstance(reply, Basic.Ack):
            raise ConfigurationError(
                f"no queue is bound to routing key {routing_key!r} on "
                f"{topology.routes_exchange(self.settings)!r}: the job was not stored"
            )

    async def _routes(self) -> AbstractExchange:
        assert self._publisher is not None
        return await self._publisher.declare_exchange(
            topology.routes_exchange(self.settings),
            aio_pika.ExchangeType.TOPIC,
            durable=True,
            # with expires= (throw-away environments): gone once its queues expired
            auto_delete=self.settings.expires_ms is not None,
            timeout=_OP_TIMEOUT_S,
        )

    # -- consuming ---------------------------------------------------------------------

    async def consume(self, queues: Sequence[str], prefetch: int | None = None) -> None:
        """Start a consumer on each queue not consumed yet. ``prefetch`` (the worker's
        concurrency) is fixed by the first call that gives one."""
        if self.prefetch is None and prefetch is not None:
            self.prefetch = max(1, prefetch)
        try:
            await self._consume(queues)
        except _TRANSIENT as exc:
            raise BackendUnavailable(
                f"RabbitMQ at {self.settings.redacted}: cannot consume: {exc!r}"
            ) from exc

    async def _consume(self, queues: Sequence[str]) -> None:
        for queue in queues:
            if queue in self._consumers:
                continue
            await self.declare(queue)
            assert self._consumer is not None
            window = self.prefetch or 1
            await self._consumer.set_qos(prefetch_count=window, timeout=_OP_TIMEOUT_S)
            amqp_queue = await self._consumer.declare_queue(
                topology.work_queue(self.settings, queue),
                durable=True,
                arguments=dict(topology.work_arguments(self.settings, queue)),
                timeout=_OP_TIMEOUT_S,
            )
            self._tags[queue] = [await self._start_consumer(queue, amqp_queue)]
            self._consumers[queue] = amqp_queue
            self._window[queue] = window

    async def _start_consumer(self, queue: str, amqp_queue: AbstractQueue) -> str:
        """One more consumer of ``queue`` (under the channel's current ``basic.qos``),
        buffering its deliveries with the others'; its tag."""
        buffer = self._buffers.setdefault(queue, deque())

        async def on_message(delivery: AbstractIncomingMessage) -> None:
            routed = topology.ROUTED_HEADER in (delivery.headers or {})
            buffer.append(Buffered(delivery, next(self._seq), routed))
            self._arrived.set()

        return await amqp_queue.consume(on_message, timeout=_OP_TIMEOUT_S)

    async def grow_prefetch(self, queues: Sequence[str], prefetch: int) -> None:
        """Let the consumers of ``queues`` hold at least ``prefetch`` unacked deliveries.

        Store-less claims take jobs from the deliveries themselves, so a claim for more
        than the current window must widen it. RabbitMQ applies a new ``basic.qos`` to
        new consumers only, so a queue consumed already gets one more consumer, whose
        prefetch is the difference. (Cancelling the consumer and starting it again made
        a quorum queue hand some deliveries that were on their way back to the queue,
        marked redelivered: 33 in a 20,000-job drain here, each counted as a stall of a
        job that never ran.) Only grows."""
        self.prefetch = max(prefetch, self.prefetch or 1)
        try:
            for queue in queues:
                window = self._window.get(queue, prefetch)
                if queue in self._consumers and window < prefetch:
                    assert self._consumer is not None
                    await self._consumer.set_qos(prefetch - window, timeout=_OP_TIMEOUT_S)
                    consumer = await self._start_consumer(queue, self._consumers[queue])
                    self._tags[queue].append(consumer)
                    self._window[queue] = prefetch
            await self._consume(queues)  # any other queue: one consumer, the whole window
        except _TRANSIENT as exc:
            raise BackendUnavailable(
                f"RabbitMQ at {self.settings.redacted}: cannot consume: {exc!r}"
            ) from exc

    async def stop_consuming(self) -> list[tuple[str, Buffered]]:
        """Cancel every consumer and hand over the deliveries buffered but not taken,
        as ``(queue, delivery)`` (none arrives after a cancel is confirmed), so the
        caller can give them back before the channel closes."""
        for queue, amqp_queue in list(self._consumers.items()):
            for tag in self._tags.pop(queue, ()):
                await amqp_queue.cancel(tag, timeout=_OP_TIMEOUT_S)
        self._consumers.clear()
        self._window.clear()
        # A delivery that arrived before the cancel was confirmed may still wait for its
        # callback task (aio-pika runs them as tasks): let them run, so it is handed
        # over too instead of appended to a buffer nobody reads (then redelivered, and
        # counted as a stall, when the channel closes).
        for _ in range(3):
            await asyncio.sleep(0)
        taken = [(queue, item) for queue, buffer in self._buffers.items() for item in buffer]
        self._buffers.clear()
        return taken

    async def ready(self, queue: str) -> int:
        """Messages of ``queue``'s work queue ready for delivery (not delivered yet).

        Asked on the consumer channel, so any delivery the broker sent before answering
        has been received by the time this returns."""
        await self.consume([queue])
        assert self._consumer is not None
        declared = await self._consumer.declare_queue(
            topology.work_queue(self.settings, queue),
            durable=True,
            arguments=dict(topology.work_arguments(self.settings, queue)),
            timeout=_OP_TIMEOUT_S,
        )
        result = declared.declaration_result
        for _ in range(3):  # let the consumer callbacks of those deliveries run
            await asyncio.sleep(0)
        return int(result.message_count or 0)

    async def depth(self, name: str, arguments: topology.FieldTable) -> int:
        """Messages in a broker queue (declared with ``arguments`` if missing)."""
        await self.connect()
        return int((await self._declare(name, arguments)).declaration_result.message_count or 0)

    def buckets(self, queue: str) -> list[tuple[str, int]]:
        """The delay buckets of ``queue`` this process has declared: (name, length)."""
        prefix = topology.wait_queue(self.settings, queue, 0)[:-1]
        return [(n, int(n[len(prefix) :])) for n in self._declared if n.startswith(prefix)]

    def connected(self) -> bool:
        """Is the connection up right now (not closed, not reconnecting)?"""
        connection = self._connection
        return connection is not None and connection.connected.is_set()

    def consuming(self, queue: str) -> bool:
        return queue in self._consumers

    def buffered(self, queue: str) -> int:
        return len(self._buffers.get(queue, ()))

    def take_any(self, queue: str, count: int) -> list[Buffered]:
        """Up to ``count`` buffered deliveries of ``queue``, oldest first (store-less:
        every message carries a whole job)."""
        buffer = self._buffers.get(queue)
        taken: list[Buffered] = []
        while buffer and len(taken) < count:
            taken.append(buffer.popleft())
        return taken

    async def arrival(self, timeout_s: float) -> None:
        """Until the next delivery of any queue is buffered, or ``timeout_s``."""
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout_s)

    def mark(self) -> int:
        """A position in the arrival order: deliveries before it are "already here"."""
        return next(self._seq)

    def routed(self, queue: str) -> list[Buffered]:
        """Buffered deliveries of ``queue`` that carry a job not stored yet."""
        return [item for item in self._buffers.get(queue, ()) if item.routed]

    def take(self, queue: str, count: int) -> list[Buffered]:
        """Up to ``count`` buffered notifications of ``queue``, oldest first (routed jobs
        not stored yet stay in the buffer)."""
        buffer = self._buffers.get(queue)
        taken: list[Buffered] = []
        kept: list[Buffered] = []
        while buffer and len(taken) < count:
            item = buffer.popleft()
            (kept if item.routed else taken).append(item)
        if buffer is not None:
            buffer.extendleft(reversed(kept))
        return taken

    def take_before(self, queue: str, mark: int) -> list[Buffered]:
        """Every buffered notification of ``queue`` that arrived before ``mark`` (routed
        jobs not stored yet stay: they are jobs, not notifications)."""
        buffer = self._buffers.get(queue)
        taken: list[Buffered] = []
        kept: list[Buffered] = []
        while buffer and buffer[0].seq < mark:
            item = buffer.popleft()
            (kept if item.routed else taken).append(item)
        if buffer is not None:
            buffer.extendleft(reversed(kept))
        return taken

    async def ack(self, items: Iterable[Buffered]) -> None:
        for item in items:
            try:  # a delivery of a lost channel: the broker requeued it already
                await item.delivery.ack()
            except _TRANSIENT as exc:
                log.debug("ack of a delivery on a lost channel ignored: %r", exc)

    async def requeue(self, items: Iterable[Buffered]) -> None:
        for item in items:
            try:
                await item.delivery.nack(requeue=True)
            except _TRANSIENT as exc:
                log.debug("requeue of a delivery on a lost channel ignored: %r", exc)

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        """Until a delivery of one of ``queues`` is buffered, or ``timeout_s``."""
        await self.consume(queues)
        if any(self._buffers.get(q) for q in queues):
            return
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout_s)
