"""RabbitMQ without a record store (``amqp://…`` with no ``store=``): the message is the job.

Why it is built this way:

* **The message carries the job.** Its body is the encoded :class:`JobRecord` (msgspec
  JSON); the attempts made so far ride in the ``x-shigoto-attempts`` header and the
  times it was found stalled in ``x-shigoto-stalls``. There is no other copy anywhere:
  a job is exactly as durable as a persistent, confirmed message on a quorum (or
  classic) queue.
* **The delivery is the lease.** A claim takes buffered deliveries and keeps them
  unacked while the jobs run; finishing acks them. A worker killed with SIGKILL drops
  its connection and RabbitMQ redelivers its jobs to another worker — there is no
  lease expiry to wait for (``recover_stalled`` finds nothing). Delivery is therefore
  *at least once*: a job whose worker dies after its handler ran but before the ack
  runs again.
* **A redelivery is a stall.** RabbitMQ marks a message it delivers again
  (``redelivered``; quorum queues also count ``x-delivery-count``) after its holder
  died or lost its channel without acking it. The claim that receives such a message
  does not run it: it counts the stall and either publishes the job to ``<queue>.dead``
  (reason ``stalled_too_often``, past ``max_stalls``) or publishes it again, unmarked,
  with the new count in its header — confirmed, then the redelivered copy is acked, so
  the count survives the next death and the job is never lost in between. Giving a job
  back on purpose must therefore never requeue (the broker would mark it): ``release``
  and ``close`` publish the message again unchanged and ack the delivery instead.
* **Retries and delays without a clock of ours.** A retry publishes the next attempt
  (the error appended to the record, the header counting the attempt) to the delay
  bucket of its backoff, then acks the current delivery; dead jobs are published, whole,
  to ``<queue>.dead``. The broker's clock runs every delay, so
  ``Capabilities.explicit_time`` is False.
* **What needs records is declared absent** (:class:`~shigoto.backends.contract.Capabilities`)
  and raises :class:`CapabilityAbsent`, which says what is missing and how to get it
  (``?store=redis://…``): lookup, listing, results, progress, dedup keys, cancel /
  remove / promote by id, pause, schedules, batches, dead-letter listing, metrics
  reads, rate limits. Writes the worker makes on its own (metrics, liveness beats, the
  audit trail) are dropped instead of failing every job; reads that can only be empty
  (batches, schedule and alert states) answer empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aio_pika.abc import AbstractIncomingMessage

from ...errors import BackendUnavailable, ConfigurationError, LeaseLost
from ...job import AttemptError, JobRecord, JobState
from ..contract import (
    Capabilities,
    Claimed,
    Completion,
    DeadFilter,
    DeadPage,
    Enqueued,
    Lease,
    LeaseStatus,
    NameCounts,
    NewJob,
    QueueLimits,
    Recovered,
)
from . import messages, pipeline, topology
from .broker import Broker, Buffered, Outgoing
from .messages import (
    ATTEMPTS_HEADER,
    STALLS_HEADER,
    channel_closed,
    encoder,
    job_message,
    next_state,
    redelivered,
    settle,
)
from .sections import AbsentSections, absent
from .settings import AmqpSettings, parse_url

log = logging.getLogger(__name__)

_SETTLE_S = 0.25
"""How long a claim waits for deliveries the broker says are ready but that have not
reached this consumer yet (a claim right after an enqueue must see the job)."""
_CLOSE_S = 5.0
"""Bound on giving buffered deliveries back at close (a broker in trouble)."""
_TRANSIT_S = 1.0
"""How long after its due time a delayed message of ours still counts as delayed in
``counts`` (the broker moves it from its bucket to the work queue meanwhile)."""
_record_decoder = msgspec.json.Decoder(JobRecord)
_job_decoder = msgspec.json.Decoder(NewJob)

_LIVE: dict[str, AbstractIncomingMessage] = {}
"""Lease token -> its unacked delivery, for the whole process: the worker's heartbeat
runs its own backend instance in a thread, and asks here whether a lease still holds."""

CAPABILITIES = Capabilities(
    name="amqp",
    durable=True,
    multi_process=True,
    multi_host=True,
    blocking_wait=True,
    rate_limits=False,
    job_records=False,
    explicit_time=False,
    idempotency=False,
    dead_letter_queue=False,
    schedules=False,
    batches=False,
    metrics=False,
    audit=False,
    routing=True,
    exact_priority=False,
)


@dataclass(slots=True)
class _Held:
    item: Buffered
    record: JobRecord


class StorelessBackend(AbsentSections):
    """RabbitMQ alone. See the module docstring for what it keeps and what it cannot."""

    capabilities: Capabilities = CAPABILITIES

    def __init__(self, url: str | AmqpSettings) -> None:
        self.settings = parse_url(url) if isinstance(url, str) else url
        if self.settings.store_url is not None:
            raise ConfigurationError("StorelessBackend is for amqp:// URLs without store=")
        self.broker = Broker(self.settings)
        self._held: dict[str, _Held] = {}
        self._returning: dict[str, int] = {}
        """Jobs of a queue given back (``release``) or queued again after a stall, and
        not claimed since: they arrive asynchronously, so the next claim waits for them."""
        self._due: dict[str, list[float]] = {}
        """Monotonic due times of the delayed messages this instance published, so
        ``counts`` still sees one while the broker moves it from its bucket into the work
        queue (a moment in which neither queue counts it)."""
        self._audit_warned = False

    async def connect(self) -> None:
        await self.broker.connect()

    async def close(self) -> None:
        """Give the buffered, unclaimed deliveries back uncounted (see
        :meth:`_give_back`), then close. Deliveries still held (jobs running: a worker
        releases its jobs before closing) return with the channel, as stalls."""
        for token in self._held:
            _LIVE.pop(token, None)
        self._held.clear()
        if self.broker.connected():
            try:
                await asyncio.wait_for(self._stop_consuming(), _CLOSE_S)
            except Exception as exc:  # a timeout too
                log.warning(
                    "giving buffered jobs back on close failed (%r): the broker requeues "
                    "them with the channel, marked redelivered (each counts as a stall)",
                    exc,
                )
        await self.broker.close()

    # -- producing ---------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], now_ms: int) -> list[Enqueued]:
        """Publish each job as one persistent message and return once every one is
        confirmed (a nack or a timeout raises; nothing is dropped). Ids are not checked
        for uniqueness: adding an id twice runs it twice."""
        if any(job.dedup_key is not None for job in jobs):
            raise absent("a dedup key")
        out: list[Enqueued] = []
        items: list[Outgoing] = []
        for job in jobs:
            delay_ms = max(0, job.ready_ms - now_ms)
            state = JobState.DELAYED if delay_ms else JobState.WAITING
            items.append(job_message(_record_of(job, state), delay_ms, 0, 0))
            out.append(Enqueued(job.id, True, state))
        await self.broker.publish(items)
        self._note_delays(items)
        return out

    # -- consuming ---------------------------------------------------------------------

    async def claim(
        self, queue: str, *, limit: int, worker_id: str, lease_ms: int, now_ms: int
    ) -> list[Claimed]:
        """Take up to ``limit`` delivered jobs of ``queue`` (broker order: priority on a
        classic queue, then FIFO), each leased by its unacked delivery."""
        if limit <= 0:
            return []
        held_here = sum(1 for h in self._held.values() if h.record.queue == queue)
        await self.broker.grow_prefetch([queue], held_here + limit)
        taken = self.broker.take_any(queue, limit)
        if len(taken) < limit:
            ready = max(await self.broker.ready(queue), self._returning.pop(queue, 0))
            want = min(limit - len(taken), ready)
            deadline = time.monotonic() + _SETTLE_S
            while self.broker.buffered(queue) < want and (left := deadline - time.monotonic()) > 0:
                await self.broker.arrival(left)
            taken += self.broker.take_any(queue, limit - len(taken))
        claimed: list[Claimed] = []
        for item in taken:
            if channel_closed(item.delivery):
                continue  # a lost channel's delivery: the broker has requeued it already
            record = await self._decode(queue, item)
            if record is None:
                continue
            if redelivered(item.delivery):
                await self._stalled(queue, item, record, now_ms)
                continue
            token = uuid.uuid4().hex
            record = msgspec.structs.replace(
                record,
                state=JobState.ACTIVE,
                started_ms=now_ms,
                worker_id=worker_id,
                lease_until_ms=now_ms + lease_ms,
            )
            self._held[token] = _Held(item, record)
            _LIVE[token] = item.delivery
            claimed.append(Claimed(record, token))
        # What one claim takes runs in the contract's order (priority, then ready time;
        # broker order for ties): a job given back or queued again after a stall is
        # published behind later jobs, and still comes first among those taken with it.
        claimed.sort(key=lambda c: (-c.record.priority, c.record.ready_ms))
        return claimed

    async def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> None:
        await self.broker.wait(queues, timeout_s)

    async def extend(
        self, leases: Sequence[Lease], *, lease_ms: int, now_ms: int
    ) -> list[LeaseStatus]:
        """A lease holds while its delivery is unacked on a live channel: nothing to
        push forward, only to report (from any instance of this process)."""
        return [LeaseStatus(lease.job_id, held=_alive(lease.token)) for lease in leases]

    async def update_progress(self, lease: Lease, progress: bytes) -> None:
        if lease.token not in self._held:
            raise LeaseLost(f"job {lease.job_id}: lease lost, progress not stored")
        raise absent("job progress (ctx.update_progress)")

    async def complete(self, items: Sequence[Completion], now_ms: int) -> list[bool]:
        """Ack each job's delivery; the result is not kept (no store). False where the
        lease was lost (unknown token, or its channel died: the broker redelivers)."""
        found = [self._release_token(item.lease.token) for item in items]
        acked = iter(await pipeline.ack([h.item.delivery for h in found if h is not None]))
        return [h is not None and next(acked) for h in found]

    async def retry(
        self, lease: Lease, *, run_at_ms: int, error: AttemptError, now_ms: int
    ) -> None:
        """Publish the next attempt (error appended, attempts counted) to the delay bucket
        of ``run_at_ms``, then ack this delivery."""
        held = self._take(lease)
        delay_ms = max(0, run_at_ms - now_ms)
        state = JobState.DELAYED if delay_ms else JobState.WAITING
        record = next_state(held.record, state, run_at_ms, [*held.record.errors, error])
        outgoing = job_message(record, delay_ms, held.record.attempts, held.record.stalls)
        try:
            await self.broker.publish([outgoing])
        except BaseException:
            self._restore(lease.token, held)
            raise
        self._note_delays([outgoing])
        await self._ack_after_move(lease, held)

    async def dead_letter(
        self, lease: Lease, *, reason: str, error: AttemptError | None, now_ms: int
    ) -> None:
        """Publish the whole dead job (reason, errors) to ``<queue>.dead``, then ack."""
        held = self._take(lease)
        errors = [*held.record.errors, *([error] if error is not None else [])]
        record = msgspec.structs.replace(
            next_state(held.record, JobState.DEAD, held.record.ready_ms, errors),
            attempts=held.record.attempts,
            reason=reason,
            finished_ms=now_ms,
        )
        try:
            await self.broker.bury(lease.queue, encoder.encode(record))
        except BaseException:
            self._restore(lease.token, held)
            raise
        await self._ack_after_move(lease, held)

    async def release(
        self, leases: Sequence[Lease], *, now_ms: int, note: AttemptError | None = None
    ) -> list[bool]:
        """Give each job back as it was delivered, attempts and stalls not counted
        (``note`` is not kept): its message is published again unchanged, confirmed,
        then the delivery is acked (:meth:`_give_back`). False where the lease was lost
        (unknown token, or its channel died: the broker has requeued it)."""
        found: list[_Held | None] = []
        for lease in leases:
            held = self._release_token(lease.token)
            live = held is not None and not channel_closed(held.item.delivery)
            found.append(held if live else None)
        if any(found) and self.broker.connected():
            # Stop consuming first (a worker releases when it stops; a later claim starts
            # again). Otherwise the ack below frees prefetch room and the copy published
            # here comes straight back to this process's consumer, possibly while it is
            # being cancelled: aiormq drops a delivery for a cancelled consumer, and the
            # broker then returns it marked redelivered, counted as a stall.
            await self._stop_consuming()
        given = iter(await self._give_back([(h.record.queue, h.item.delivery) for h in found if h]))
        return [h is not None and next(given) for h in found]

    async def promote_due(self, queue: str, *, now_ms: int, limit: int) -> int:
        return 0  # delay buckets dead-letter due jobs into the work queue themselves

    async def recover_stalled(self, queue: str, *, now_ms: int, limit: int) -> list[Recovered]:
        return []  # a dead worker's connection closes and the broker redelivers its jobs

    async def postpone(self, lease: Lease, *, run_at_ms: int, hold: bool, now_ms: int) -> None:
        raise absent("rate limiting (postpone)")

    # -- reading -----------------------------------------------------------------------

    async def counts(self, queue: str) -> dict[JobState, int]:
        """The broker's view, not exact counts: ``waiting`` = messages ready in the work
        queue (plus deliveries this process has buffered), ``delayed`` = messages in
        the delay buckets this process has declared, ``active`` = jobs this process
        runs, ``dead`` = messages in ``<queue>.dead``; finished jobs are not counted."""
        # Buckets first, then the work queue, then our buffer: a job moving from one to
        # the next while we look is seen in the later one (it only moves that way).
        delayed = 0
        for name, length_ms in self.broker.buckets(queue):
            arguments = topology.wait_arguments(self.settings, queue, length_ms)
            delayed += await self.broker.depth(name, arguments)
        now = time.monotonic()
        due = self._due.get(queue, [])
        due[:] = [t for t in due if t > now - _TRANSIT_S]
        delayed = max(delayed, len(due))
        if self.broker.consuming(queue):
            waiting = await self.broker.ready(queue)
            waiting += self.broker.buffered(queue)
        else:
            waiting = await self.broker.depth(
                topology.work_queue(self.settings, queue),
                topology.work_arguments(self.settings, queue),
            )
        dead = await self.broker.depth(
            topology.dead_queue(self.settings, queue),
            topology.dead_arguments(self.settings, queue),
        )
        active = sum(1 for h in self._held.values() if h.record.queue == queue)
        counts = dict.fromkeys(JobState, 0)
        counts.update(
            {
                JobState.WAITING: waiting,
                JobState.DELAYED: delayed,
                JobState.ACTIVE: active,
                JobState.DEAD: dead,
            }
        )
        return counts

    async def is_paused(self, queue: str) -> bool:
        return False  # pausing needs a store; a queue here is never paused

    async def get(self, queue: str, job_id: str) -> JobRecord | None:
        raise absent("looking a job up by id")

    async def queues(self) -> list[str]:
        raise absent("listing queues")

    async def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobRecord]:
        raise absent("listing jobs by state")

    async def counts_by_name(self, queue: str, *, limit: int = 10_000) -> NameCounts:
        raise absent("counting jobs by name")

    # -- administering -----------------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, *, now_ms: int) -> JobState | None:
        raise absent("cancelling a job by id")

    async def remove(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        raise absent("removing a job by id")

    async def promote(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        raise absent("promoting a delayed job by id")

    async def replace_payload(self, queue: str, job_id: str, old: bytes, new: bytes) -> bool:
        raise absent("rewriting stored payloads (key rotation)")

    async def set_paused(self, queue: str, paused: bool) -> None:
        raise absent("pausing a queue")

    async def set_limits(self, queue: str, limits: QueueLimits) -> None:
        raise absent("rate limits")

    async def get_limits(self, queue: str, *, now_ms: int) -> QueueLimits:
        return QueueLimits()  # none can be set

    async def redrive(
        self,
        queue: str,
        job_ids: Sequence[str],
        *,
        now_ms: int,
        run_at_ms: int | None = None,
        note: AttemptError | None = None,
    ) -> list[str]:
        raise absent("redriving dead jobs")

    async def list_dead(
        self, queue: str, where: DeadFilter, *, cursor: str | None = None, limit: int = 100
    ) -> DeadPage:
        raise absent("listing dead jobs (they are messages in the <queue>.dead broker queue)")

    async def purge_dead(self, queue: str, job_ids: Sequence[str]) -> list[str]:
        raise absent("purging dead jobs by id")

    # -- routing (RabbitMQ only) ---------------------------------------------------------

    async def bind_route(self, queue: str, pattern: str) -> None:
        """Let jobs routed with a key matching ``pattern`` land in ``queue``."""
        await self.broker.bind(queue, pattern)

    async def route(self, routing_key: str, job: NewJob) -> None:
        """Publish ``job`` to the topic exchange: every bound queue gets its own copy.
        Raises ``ConfigurationError`` when no queue is bound to the key."""
        if job.dedup_key is not None:
            raise absent("a dedup key")
        await self.broker.route(routing_key, encoder.encode(job), job.priority)

    # -- plumbing ----------------------------------------------------------------------

    async def _stalled(self, queue: str, item: Buffered, record: JobRecord, now_ms: int) -> None:
        """Count a redelivered job's stall (:func:`messages.count_stall`)."""
        if await messages.count_stall(self.broker, queue, item.delivery, record, now_ms):
            self._returning[queue] = self._returning.get(queue, 0) + 1

    async def _stop_consuming(self) -> None:
        """Take no more deliveries, and give back those buffered but not claimed:
        uncounted, except the ones already marked redelivered (requeued: the mark stays
        for the next claim to count)."""
        buffered = await self.broker.stop_consuming()
        fresh = [(q, b.delivery) for q, b in buffered if not redelivered(b.delivery)]
        for _, item in buffered:
            if redelivered(item.delivery):
                await settle(item.delivery, ack=False)
        await self._give_back(fresh)

    async def _give_back(self, items: Sequence[tuple[str, AbstractIncomingMessage]]) -> list[bool]:
        """Return deliveries uncounted (:func:`messages.give_back`)."""
        oks = await messages.give_back(self.broker, items)
        for (queue, _), ok in zip(items, oks, strict=True):
            if ok:
                self._returning[queue] = self._returning.get(queue, 0) + 1
        return oks

    async def _decode(self, queue: str, item: Buffered) -> JobRecord | None:
        """The job a delivery carries, as claimed: attempts from the header + 1, stalls
        from the header. A body that is not a job is moved to ``<queue>.dead`` as it is
        (never retried)."""
        delivery = item.delivery
        headers: dict[str, Any] = dict(delivery.headers or {})
        try:
            if topology.ROUTED_HEADER in headers:
                record = _record_of(_job_decoder.decode(delivery.body), JobState.WAITING)
            else:
                record = _record_decoder.decode(delivery.body)
            attempts = int(headers.get(ATTEMPTS_HEADER, 0))
            stalls = int(headers.get(STALLS_HEADER, 0))
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            log.error("a message on %s is not a shigoto job (%s): moved to .dead", queue, exc)
            try:
                await self.broker.bury(queue, delivery.body)
            except BackendUnavailable:
                await settle(delivery, ack=False)
                return None
            await settle(delivery, ack=True)
            return None
        return msgspec.structs.replace(record, queue=queue, attempts=attempts + 1, stalls=stalls)

    def _note_delays(self, items: Sequence[Outgoing]) -> None:
        now = time.monotonic()
        for item in items:
            if item.delay_ms > 0:
                due = self._due.setdefault(item.queue, [])
                due.append(now + item.delay_ms / 1000)
                if len(due) % 1024 == 0:  # bounded: only jobs still delayed stay
                    due[:] = [t for t in due if t > now - _TRANSIT_S]

    def _take(self, lease: Lease) -> _Held:
        held = self._release_token(lease.token)
        if held is None:
            raise LeaseLost(f"job {lease.job_id}: lease lost (unknown or finished token)")
        return held

    def _release_token(self, token: str) -> _Held | None:
        _LIVE.pop(token, None)
        return self._held.pop(token, None)

    def _restore(self, token: str, held: _Held) -> None:
        """A move failed to publish: the delivery is still ours (shutdown releases it)."""
        self._held[token] = held
        _LIVE[token] = held.item.delivery

    async def _ack_after_move(self, lease: Lease, held: _Held) -> None:
        if not await settle(held.item.delivery, ack=True):
            log.warning(
                "job %s: its next step is published but the channel of its delivery was "
                "lost, so RabbitMQ will deliver this attempt again (at least once)",
                lease.job_id,
                extra={"job_id": lease.job_id, "queue": lease.queue},
            )


def _record_of(job: NewJob, state: JobState) -> JobRecord:
    return JobRecord(
        id=job.id,
        queue=job.queue,
        name=job.name,
        payload=job.payload,
        options=job.options,
        state=state,
        priority=job.options.priority,
        created_ms=job.created_ms,
        ready_ms=job.ready_ms,
        group=job.group,
    )


def _alive(token: str) -> bool:
    delivery = _LIVE.get(token)
    if delivery is None:
        return False
    return not getattr(delivery.channel, "is_closed", False)
