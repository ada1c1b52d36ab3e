"""RabbitMQ backend: the broker carries ready jobs, a record store keeps the books.

Why it is built this way:

* **Two parts, one contract.** RabbitMQ is a message broker: it cannot list jobs by
  state, look one up, de-duplicate, keep results or progress, or fence a finishing
  transition with a token. Rather than widen the contract, an ``amqp://`` URL names a
  *record store* (``?store=redis://…`` or ``sqlite:///…``), an ordinary shigoto
  backend that owns job records, state, leases and every read/admin section. Every
  transition is the store's (same atomicity, same fencing, same exact
  (priority, ready time, enqueue order) claim order); this class adds the broker.
* **The broker is the delivery path.** Each transition that makes a job ready
  publishes a persistent, confirmed notification to the queue's durable quorum (or
  classic-priority) queue — delayed ones through a TTL delay bucket that dead-letters
  into it at the due time (no plugin). Idle workers block on their consumers instead
  of polling the store, so wake-ups cross processes and hosts at broker latency.
* **Deliveries ride with leases.** A claim pairs each leased job with one buffered
  delivery and acks it only at the job's finishing transition; a killed worker's
  deliveries return to the queue and wake another worker at once, which recovers the
  job when its store lease expires (the store lease is the fence: a delivery is a
  notification, so redelivery never runs a job twice).
* **A lost notification costs latency, never a job**: workers still claim from the
  store every ``idle_wait_s`` and on every wake-up, and surplus notifications (a job
  someone else already claimed, a delay that was promoted early) are acked when a
  claim comes back short.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from ...errors import BackendUnavailable, ConfigurationError, ShigotoError
from ...job import AttemptError, JobRecord, JobState
from ..contract import (
    Backend,
    Capabilities,
    Claimed,
    Completion,
    Enqueued,
    Lease,
    LeaseStatus,
    LimitOutlook,
    NewJob,
    Recovered,
)
from ..race import first_done
from .broker import Broker, Buffered, Notice
from .delegation import StoreSections
from .settings import AmqpSettings, parse_url

log = logging.getLogger(__name__)


class StoredBackend(StoreSections):
    """RabbitMQ over a record store. See :mod:`shigoto.backends.amqp.settings` for URL
    options; built by :func:`shigoto.backends.amqp.AmqpBackend` for a URL with ``store=``."""

    capabilities: Capabilities

    def __init__(self, url: str) -> None:
        from .. import open_backend  # the store is any other backend

        self.settings: AmqpSettings = parse_url(url)
        if self.settings.store_url is None:
            raise ConfigurationError("StoredBackend needs an amqp:// URL with store=")
        self.store: Backend = open_backend(self.settings.store_url)
        store = self.store.capabilities
        self.capabilities = Capabilities(
            name="amqp",
            durable=store.durable,
            multi_process=store.multi_process,
            multi_host=store.multi_host,
            blocking_wait=True,
            # the store's claim enforces them; its outlook tells waits about the slots
            rate_limits=store.rate_limits and isinstance(self.store, LimitOutlook),
            job_records=True,
            explicit_time=store.explicit_time,
            idempotency=store.idempotency,
            dead_letter_queue=store.dead_letter_queue,
            schedules=store.schedules,
            batches=store.batches,
            metrics=store.metrics,
            audit=store.audit,
            routing=True,
        )
        self.broker = Broker(self.settings)
        self._held: dict[str, tuple[Buffered, int]] = {}
        """Lease token -> (the delivery that came with the job, its priority)."""
        self._broker_down_logged = False

    async def connect(self) -> None:
        await self.store.connect()
        await self.broker.connect()

    async def close(self) -> None:
        self._held.clear()  # closing the channel returns them to the queue
        try:
            await self.broker.close()
        finally:
            await self.store.close()

    # -- producing ---------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], now_ms: int) -> list[Enqueued]:
        results = await self.store.enqueue(jobs, now_ms)
        await self.broker.notify(
            _notice(job, now_ms)
            for job, result in zip(jobs, results, strict=True)
            if result.created
        )
        return results

    # -- consuming ---------------------------------------------------------------------

    async def claim(
        self, queue: str, *, limit: int, worker_id: str, lease_ms: int, now_ms: int
    ) -> list[Claimed]:
        broker_up = await self._consume([queue], prefetch=limit)
        mark = self.broker.mark()
        if broker_up:
            await self._store_routed(queue, now_ms)
        claimed = await self.store.claim(
            queue, limit=limit, worker_id=worker_id, lease_ms=lease_ms, now_ms=now_ms
        )
        if not broker_up:
            return claimed
        for job, delivery in zip(claimed, self.broker.take(queue, len(claimed)), strict=False):
            self._held[job.token] = (delivery, job.record.options.priority)
        if len(claimed) < limit:
            # The store had no more ready jobs: notifications that were already here
            # when the claim began are about jobs claimed since (here or elsewhere).
            await self.broker.ack(self.broker.take_before(queue, mark))
        return claimed

    async def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> None:
        held, due_in_s = (
            self.store.outlook(queues) if isinstance(self.store, LimitOutlook) else ([], None)
        )
        open_queues = [queue for queue in queues if queue not in held]
        if not open_queues or not await self._consume(open_queues):
            # Every queue is held by its limits (the store sleeps until a slot opens or
            # a job of ours finishes, with no round trip), or the broker is unreachable
            # (the store's own wait, or poll).
            await self.store.wait_for_work(queues, timeout_s)
            return
        if due_in_s is not None:  # e.g. jobs a rate-limit group parked until its slot
            timeout_s = min(timeout_s, due_in_s)
        if not held:
            await self.broker.wait(open_queues, timeout_s)
            return
        # Deliveries for the open queues, or the first held one's slot, whichever first.
        await first_done(
            self.broker.wait(open_queues, timeout_s), self.store.wait_for_work(held, timeout_s)
        )

    async def extend(
        self, leases: Sequence[Lease], *, lease_ms: int, now_ms: int
    ) -> list[LeaseStatus]:
        statuses = await self.store.extend(leases, lease_ms=lease_ms, now_ms=now_ms)
        lost = [lease for lease, s in zip(leases, statuses, strict=True) if not s.held]
        await self._settle(lost)
        return statuses

    async def update_progress(self, lease: Lease, progress: bytes) -> None:
        await self.store.update_progress(lease, progress)

    async def complete(self, items: Sequence[Completion], now_ms: int) -> list[bool]:
        try:
            return await self.store.complete(items, now_ms)
        finally:
            await self._settle([item.lease for item in items])

    async def retry(
        self, lease: Lease, *, run_at_ms: int, error: AttemptError, now_ms: int
    ) -> None:
        priority = self._priority(lease)
        try:
            await self.store.retry(lease, run_at_ms=run_at_ms, error=error, now_ms=now_ms)
        finally:
            await self._settle([lease])
        delay_ms = max(0, run_at_ms - now_ms)
        await self.broker.notify([Notice(lease.queue, lease.job_id, priority, delay_ms)])

    async def postpone(self, lease: Lease, *, run_at_ms: int, hold: bool, now_ms: int) -> None:
        priority = self._priority(lease)
        try:
            await self.store.postpone(lease, run_at_ms=run_at_ms, hold=hold, now_ms=now_ms)
        finally:
            await self._settle([lease])
        delay_ms = max(0, run_at_ms - now_ms)
        await self.broker.notify([Notice(lease.queue, lease.job_id, priority, delay_ms)])

    async def dead_letter(
        self, lease: Lease, *, reason: str, error: AttemptError | None, now_ms: int
    ) -> None:
        try:
            await self.store.dead_letter(lease, reason=reason, error=error, now_ms=now_ms)
        finally:
            await self._settle([lease])
        summary = {
            "id": lease.job_id,
            "queue": lease.queue,
            "reason": reason,
            "error_type": error.error_type if error else None,
            "message": error.message if error else None,
            "at_ms": now_ms,
        }
        try:
            await self.broker.bury(lease.queue, msgspec.json.encode(summary))
        except ShigotoError as exc:  # a copy for broker tools; the store has the job
            log.warning(
                "dead job %s is in the store but not copied to the .dead queue: %s",
                lease.job_id,
                exc,
                extra={"job_id": lease.job_id, "queue": lease.queue},
            )

    async def release(
        self, leases: Sequence[Lease], *, now_ms: int, note: AttemptError | None = None
    ) -> list[bool]:
        oks = await self.store.release(leases, now_ms=now_ms, note=note)
        unpaired: list[Notice] = []
        for lease, ok in zip(leases, oks, strict=True):
            held = self._held.pop(lease.token, None)
            if held is None:
                if ok:
                    unpaired.append(Notice(lease.queue, lease.job_id))
            elif ok:  # give its notification back for the next worker
                await self.broker.requeue([held[0]])
            else:
                await self.broker.ack([held[0]])
        await self.broker.notify(unpaired)
        return oks

    # -- housekeeping ------------------------------------------------------------------

    async def promote_due(self, queue: str, *, now_ms: int, limit: int) -> int:
        moved = await self.store.promote_due(queue, now_ms=now_ms, limit=limit)
        await self.broker.notify(Notice(queue, "") for _ in range(moved))
        return moved

    async def recover_stalled(self, queue: str, *, now_ms: int, limit: int) -> list[Recovered]:
        recovered = await self.store.recover_stalled(queue, now_ms=now_ms, limit=limit)
        await self.broker.notify(
            Notice(queue, r.job_id) for r in recovered if r.state is JobState.WAITING
        )
        return recovered

    # -- reading -----------------------------------------------------------------------

    async def get(self, queue: str, job_id: str) -> JobRecord | None:
        return await self.store.get(queue, job_id)

    async def counts(self, queue: str) -> dict[JobState, int]:
        return await self.store.counts(queue)

    async def queues(self) -> list[str]:
        return await self.store.queues()

    async def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobRecord]:
        return await self.store.list_jobs(queue, state, offset=offset, limit=limit)

    # -- administering -----------------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, *, now_ms: int) -> JobState | None:
        return await self.store.cancel(queue, job_id, now_ms=now_ms)

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self.store.set_paused(queue, paused)
        if not paused:  # idle workers acked their notifications while it was paused
            await self.broker.notify([Notice(queue, "")])

    async def is_paused(self, queue: str) -> bool:
        return await self.store.is_paused(queue)

    async def redrive(
        self,
        queue: str,
        job_ids: Sequence[str],
        *,
        now_ms: int,
        run_at_ms: int | None = None,
        note: AttemptError | None = None,
    ) -> list[str]:
        moved = await self.store.redrive(
            queue, job_ids, now_ms=now_ms, run_at_ms=run_at_ms, note=note
        )
        delay_ms = max(0, (run_at_ms or now_ms) - now_ms)
        await self.broker.notify(Notice(queue, job_id, 0, delay_ms) for job_id in moved)
        return moved

    async def claim_tick(self, schedule: str, fire_ms: int, job: NewJob, *, now_ms: int) -> bool:
        claimed = await self.store.claim_tick(schedule, fire_ms, job, now_ms=now_ms)
        if claimed:
            await self.broker.notify([_notice(job, now_ms)])
        return claimed

    async def finish_batch(
        self,
        queue: str,
        batch_id: str,
        *,
        outcome: str,
        follow_up: NewJob | None,
        now_ms: int,
    ) -> bool:
        finished = await self.store.finish_batch(
            queue, batch_id, outcome=outcome, follow_up=follow_up, now_ms=now_ms
        )
        if finished and follow_up is not None:
            await self.broker.notify([_notice(follow_up, now_ms)])
        return finished

    async def promote(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        promoted = await self.store.promote(queue, job_id, now_ms=now_ms)
        if promoted:
            await self.broker.notify([Notice(queue, job_id)])
        return promoted

    # -- routing (RabbitMQ only) ---------------------------------------------------------

    async def bind_route(self, queue: str, pattern: str) -> None:
        """Let jobs routed with a key matching ``pattern`` (topic syntax: ``orders.*``,
        ``audit.#``) land in ``queue``. Bindings live in the broker; idempotent."""
        await self.broker.bind(queue, pattern)

    async def route(self, routing_key: str, job: NewJob) -> None:
        """Publish ``job`` to the topic exchange: every queue bound to a matching
        pattern gets its own copy (same id, ``job.queue`` ignored), stored in that
        queue's records by the first of its workers to receive it. Confirmed and
        persistent; raises ``ConfigurationError`` when no queue is bound to the key.
        Until a worker of a bound queue receives it, the copy is only in RabbitMQ
        (not yet counted or listed by the store)."""
        await self.broker.route(routing_key, msgspec.json.encode(job), job.priority)

    async def _store_routed(self, queue: str, now_ms: int) -> None:
        routed = self.broker.routed(queue)
        if not routed:
            return
        jobs = [
            msgspec.structs.replace(
                msgspec.json.decode(item.delivery.body, type=NewJob), queue=queue
            )
            for item in routed
        ]
        await self.store.enqueue(jobs, now_ms)  # an id already stored is left alone
        for item in routed:
            item.routed = False  # from now on it is this job's notification

    # -- plumbing ----------------------------------------------------------------------

    async def _consume(self, queues: Sequence[str], prefetch: int | None = None) -> bool:
        """Make sure our consumers run; False (logged once) while the broker is down."""
        try:
            await self.broker.consume(queues, prefetch)
        except BackendUnavailable as exc:
            if not self._broker_down_logged:
                log.warning("RabbitMQ unreachable, claiming from the store only: %s", exc)
                self._broker_down_logged = True
            return False
        self._broker_down_logged = False
        return True

    def _priority(self, lease: Lease) -> int:
        held = self._held.get(lease.token)
        return held[1] if held else 0

    async def _settle(self, leases: Sequence[Lease]) -> None:
        """Ack the deliveries that came with these leases (their jobs are done here)."""
        deliveries = [h[0] for lease in leases if (h := self._held.pop(lease.token, None))]
        await self.broker.ack(deliveries)


def _notice(job: NewJob, now_ms: int) -> Notice:
    return Notice(job.queue, job.id, job.priority, max(0, job.ready_ms - now_ms))
