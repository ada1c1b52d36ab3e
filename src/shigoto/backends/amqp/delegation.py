"""The sections RabbitMQ has no part in, handed to the record store unchanged.

Schedules, the dead-letter queue, idempotency records, metrics, worker beats, alerts,
audit, batches and job removal are bookkeeping, not delivery: the record store (an
ordinary shigoto backend) already implements each atomically, so these methods are
explicit one-line delegations (no ``__getattr__``, so ``mypy --strict`` and ``grep``
see every one). Transitions that make a job ready live in :mod:`.backend`, because
they also publish a notification.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...job import JobState
from ..contract import (
    AuditEntry,
    AuditFilter,
    AuditPage,
    Backend,
    BatchRecord,
    DeadFilter,
    DeadPage,
    MetricBucket,
    MetricSample,
    NameCounts,
    OnceClaim,
    QueueLimits,
    Resolution,
    ScheduleState,
    StoredAlert,
)


class StoreSections:
    """Every contract section but the core transitions, delegated to ``self.store``."""

    store: Backend

    async def register_schedules(self, names: Sequence[str], *, now_ms: int) -> None:
        return await self.store.register_schedules(names, now_ms=now_ms)

    async def schedule_states(self, *, limit: int = 1000) -> list[ScheduleState]:
        return await self.store.schedule_states(limit=limit)

    async def save_schedule(self, name: str, definition: bytes, *, now_ms: int) -> None:
        return await self.store.save_schedule(name, definition, now_ms=now_ms)

    async def delete_schedule(self, name: str) -> bool:
        return await self.store.delete_schedule(name)

    async def list_dead(
        self, queue: str, where: DeadFilter, *, cursor: str | None = None, limit: int = 100
    ) -> DeadPage:
        return await self.store.list_dead(queue, where, cursor=cursor, limit=limit)

    async def purge_dead(self, queue: str, job_ids: Sequence[str]) -> list[str]:
        return await self.store.purge_dead(queue, job_ids)

    async def once_claim(
        self, queue: str, key: str, *, owner: str, lease_ms: int, now_ms: int
    ) -> OnceClaim:
        return await self.store.once_claim(
            queue, key, owner=owner, lease_ms=lease_ms, now_ms=now_ms
        )

    async def once_mark(
        self,
        queue: str,
        key: str,
        *,
        owner: str,
        result: bytes | None,
        ttl_ms: int | None,
        now_ms: int,
    ) -> bool:
        return await self.store.once_mark(
            queue, key, owner=owner, result=result, ttl_ms=ttl_ms, now_ms=now_ms
        )

    async def once_release(self, queue: str, key: str, *, owner: str) -> bool:
        return await self.store.once_release(queue, key, owner=owner)

    async def record_metrics(self, samples: Sequence[MetricSample], *, now_ms: int) -> None:
        return await self.store.record_metrics(samples, now_ms=now_ms)

    async def read_metrics(
        self, queue: str, *, resolution: Resolution, since_ms: int, until_ms: int
    ) -> list[MetricBucket]:
        return await self.store.read_metrics(
            queue, resolution=resolution, since_ms=since_ms, until_ms=until_ms
        )

    async def worker_beat(
        self, worker_id: str, info: bytes, *, expires_ms: int, now_ms: int
    ) -> None:
        return await self.store.worker_beat(worker_id, info, expires_ms=expires_ms, now_ms=now_ms)

    async def worker_gone(self, worker_id: str) -> None:
        return await self.store.worker_gone(worker_id)

    async def list_workers(self, *, now_ms: int, limit: int = 1000) -> list[bytes]:
        return await self.store.list_workers(now_ms=now_ms, limit=limit)

    async def alert_states(self, *, limit: int = 1000) -> list[StoredAlert]:
        return await self.store.alert_states(limit=limit)

    async def alert_transition(
        self, key: str, state: bytes, *, version: int, note: bytes | None, now_ms: int
    ) -> bool:
        return await self.store.alert_transition(
            key, state, version=version, note=note, now_ms=now_ms
        )

    async def alert_history(self, *, limit: int = 100) -> list[bytes]:
        return await self.store.alert_history(limit=limit)

    async def counts_by_name(self, queue: str, *, limit: int = 10_000) -> NameCounts:
        return await self.store.counts_by_name(queue, limit=limit)

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        return await self.store.audit_append(entries)

    async def audit_query(
        self, where: AuditFilter, *, cursor: str | None = None, limit: int = 100
    ) -> AuditPage:
        return await self.store.audit_query(where, cursor=cursor, limit=limit)

    async def audit_prune(self, *, before_ms: int, limit: int = 1000) -> int:
        return await self.store.audit_prune(before_ms=before_ms, limit=limit)

    async def replace_payload(self, queue: str, job_id: str, old: bytes, new: bytes) -> bool:
        return await self.store.replace_payload(queue, job_id, old, new)

    async def create_batch(self, batch: BatchRecord) -> None:
        return await self.store.create_batch(batch)

    async def expect_batch_chunks(
        self, queue: str, batch_id: str, first_index: int, count: int
    ) -> None:
        return await self.store.expect_batch_chunks(queue, batch_id, first_index, count)

    async def seal_batch(
        self, queue: str, batch_id: str, *, total_chunks: int, total_items: int, now_ms: int
    ) -> BatchRecord | None:
        return await self.store.seal_batch(
            queue, batch_id, total_chunks=total_chunks, total_items=total_items, now_ms=now_ms
        )

    async def record_batch_chunks(
        self,
        queue: str,
        batch_id: str,
        chunks: Sequence[tuple[int, JobState]],
        *,
        now_ms: int,
    ) -> BatchRecord | None:
        return await self.store.record_batch_chunks(queue, batch_id, chunks, now_ms=now_ms)

    async def reconcile_batch(
        self, queue: str, batch_id: str, *, now_ms: int, limit: int = 1000
    ) -> BatchRecord | None:
        return await self.store.reconcile_batch(queue, batch_id, now_ms=now_ms, limit=limit)

    async def pending_batch_chunks(
        self, queue: str, batch_id: str, *, limit: int = 1000
    ) -> list[int]:
        return await self.store.pending_batch_chunks(queue, batch_id, limit=limit)

    async def get_batch(self, queue: str, batch_id: str) -> BatchRecord | None:
        return await self.store.get_batch(queue, batch_id)

    async def list_batches(
        self, queue: str, *, unfinished: bool = False, limit: int = 100
    ) -> list[BatchRecord]:
        return await self.store.list_batches(queue, unfinished=unfinished, limit=limit)

    async def cancel_batch(self, queue: str, batch_id: str, *, now_ms: int) -> BatchRecord | None:
        return await self.store.cancel_batch(queue, batch_id, now_ms=now_ms)

    async def remove(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        return await self.store.remove(queue, job_id, now_ms=now_ms)

    async def set_limits(self, queue: str, limits: QueueLimits) -> None:
        return await self.store.set_limits(queue, limits)

    async def get_limits(self, queue: str, *, now_ms: int) -> QueueLimits:
        return await self.store.get_limits(queue, now_ms=now_ms)

    async def read_metric_totals(self, queue: str) -> dict[str, dict[str, int]]:
        return await self.store.read_metric_totals(queue)
