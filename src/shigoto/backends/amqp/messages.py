"""A store-less job as a RabbitMQ message: its headers, and the moves that keep its
counts honest.

Why it is built this way: the message is the only copy of the job, so every move is a
confirmed publish *before* the ack of the delivery it replaces (a crash in between
runs the job twice, never zero times). And the broker's ``redelivered`` mark is how a
stall is seen — RabbitMQ sets it when a holder died or lost its channel without
acking — so nothing here ever *requeues* a message on purpose (``nack(requeue=True)``
would set the same mark): a job given back is published again unchanged instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from aio_pika.abc import AbstractIncomingMessage

from ...errors import BackendUnavailable
from ...job import AttemptError, DeadReason, JobRecord, JobState
from . import pipeline
from .broker import Broker, Outgoing

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-shigoto-attempts"
"""Attempts made before this message was published (a claim makes it one more)."""
STALLS_HEADER = "x-shigoto-stalls"
"""Times the job was found stalled (delivered again after its holder died); absent: 0."""
encoder = msgspec.json.Encoder()


def next_state(
    record: JobRecord, state: JobState, ready_ms: int, errors: list[AttemptError]
) -> JobRecord:
    """``record`` moved to ``state``, no longer held by anyone (stalls kept: they count
    over the job's whole life, retries included, as with a store)."""
    return msgspec.structs.replace(
        record,
        state=state,
        ready_ms=ready_ms,
        errors=errors,
        started_ms=None,
        worker_id=None,
        lease_until_ms=None,
    )


def job_message(record: JobRecord, delay_ms: int, attempts: int, stalls: int) -> Outgoing:
    """The message that carries ``record``: the counts ride in headers."""
    headers: dict[str, Any] = {ATTEMPTS_HEADER: attempts}
    if stalls:
        headers[STALLS_HEADER] = stalls
    return Outgoing(record.queue, encoder.encode(record), record.priority, delay_ms, headers)


def redelivered(delivery: AbstractIncomingMessage) -> bool:
    """Did the broker deliver this message before, to a holder that never acked it?"""
    count = (delivery.headers or {}).get("x-delivery-count", 0)
    return bool(delivery.redelivered) or (isinstance(count, int) and count > 0)


def channel_closed(delivery: AbstractIncomingMessage) -> bool:
    return bool(getattr(delivery.channel, "is_closed", False))


async def count_stall(
    broker: Broker, queue: str, delivery: AbstractIncomingMessage, record: JobRecord, now_ms: int
) -> bool:
    """A redelivered job: its previous holder died (or lost its channel) before
    acking. Count the stall; past ``max_stalls`` publish the job to ``<queue>.dead``,
    otherwise publish it again with the new count (unmarked, to be claimed like any
    job); confirmed first, then ack the redelivered copy. If the publish fails the
    delivery is requeued (still marked: the next claim counts it the same way).

    Returns whether the job was queued again (it reaches a consumer shortly)."""
    stalls = record.stalls + 1
    error = AttemptError(
        attempt=record.attempts,
        error_type="Stalled",
        message="the worker stopped mid-run: RabbitMQ delivered the job again because "
        "its holder never acked it (killed, crashed or lost its connection)",
        traceback="",
        worker_id="",
        started_ms=None,
        ended_ms=now_ms,
    )
    errors = [*record.errors, error]
    extra = {"job_id": record.id, "queue": queue}
    dead = stalls > record.options.max_stalls
    try:
        if dead:
            buried = msgspec.structs.replace(
                next_state(record, JobState.DEAD, record.ready_ms, errors),
                attempts=record.attempts,
                stalls=stalls,
                reason=DeadReason.STALLED_TOO_OFTEN.value,
                finished_ms=now_ms,
            )
            await broker.bury(queue, encoder.encode(buried))
        else:
            again = msgspec.structs.replace(
                next_state(record, JobState.WAITING, record.ready_ms, errors),
                attempts=record.attempts - 1,
                stalls=stalls,
            )
            await broker.publish([job_message(again, 0, record.attempts - 1, stalls)])
    except BackendUnavailable as exc:
        log.warning(
            "job %s stalled, but moving it failed (%r): requeued as it was",
            record.id,
            exc,
            extra=extra,
        )
        await settle(delivery, ack=False)
        return False
    if dead:
        log.error(
            "job %s (%s) stalled %d time(s), more than max_stalls=%d: moved to .dead",
            record.id,
            record.name,
            stalls,
            record.options.max_stalls,
            extra=extra,
        )
    else:
        log.warning(
            "job %s (%s) stalled (its worker stopped mid-run): queued again, stall %d "
            "of at most %d",
            record.id,
            record.name,
            stalls,
            record.options.max_stalls,
            extra=extra,
        )
    if not await settle(delivery, ack=True):
        log.warning(
            "job %s: its stall is recorded but the redelivered copy's channel was "
            "lost, so RabbitMQ will deliver it once more (at least once)",
            record.id,
            extra=extra,
        )
    return not dead


async def give_back(
    broker: Broker, items: Sequence[tuple[str, AbstractIncomingMessage]]
) -> list[bool]:
    """Return deliveries to their queues uncounted: each message is published again
    unchanged (body, headers, priority; confirmed), then the delivery is acked. Not a
    requeue, which the broker marks ``redelivered`` and a claim counts as a stall.
    If the publish fails the deliveries are requeued (marked: at worst one stall
    each). Per item: whether it went back through this call."""
    if not items:
        return []
    outgoing = [
        Outgoing(
            queue,
            delivery.body,
            headers=dict(delivery.headers or {}),
            amqp_priority=delivery.priority,
        )
        for queue, delivery in items
    ]
    try:
        await broker.publish(outgoing)
    except BackendUnavailable as exc:
        log.warning(
            "giving %d job(s) back by publishing failed (%r): requeued instead, marked "
            "redelivered by the broker (each will count as a stall)",
            len(items),
            exc,
        )
        oks = [await settle(delivery, ack=False) for _, delivery in items]
    else:
        # drained: a release or close is followed by closing the connection, and an
        # ack still queued then would return the original too, marked as a stall
        oks = await pipeline.ack([delivery for _, delivery in items], drained=True)
    return oks


async def settle(delivery: AbstractIncomingMessage, *, ack: bool) -> bool:
    """Ack (or requeue) one delivery; False when its channel is gone (the broker has
    requeued it already, so the lease was lost)."""
    try:
        if ack:
            await delivery.ack()
        else:
            await delivery.nack(requeue=True)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:
        log.debug("settling a delivery failed (lost channel): %r", exc)
        return False
    return True
