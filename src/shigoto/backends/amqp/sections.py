"""The contract sections a store-less amqp backend cannot keep, in one place.

Each method either raises :class:`CapabilityAbsent` (what is missing, and the URL
option that brings it), answers what is true without a store (no batch, schedule or
alert state can exist, so listings are empty), or — for writes the worker makes on its
own — drops the write, so a worker without a store runs jobs instead of failing each
one on its bookkeeping. Explicit methods (no ``__getattr__``), so ``mypy --strict`` and
``grep`` see every one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ...errors import ConfigurationError
from ...job import JobState
from ..contract import (
    AuditEntry,
    AuditFilter,
    AuditPage,
    BatchRecord,
    MetricBucket,
    MetricSample,
    NewJob,
    OnceClaim,
    Resolution,
    ScheduleState,
    StoredAlert,
)

log = logging.getLogger(__name__)


class CapabilityAbsent(ConfigurationError):
    """The operation needs a capability this backend declares absent (see
    :class:`~shigoto.backends.contract.Capabilities`); the message says how to get it."""


def absent(what: str) -> CapabilityAbsent:
    return CapabilityAbsent(
        f"{what} needs a record store, and this amqp:// backend has none (RabbitMQ alone "
        "keeps no job records): add ?store=redis://HOST:6379/0 (or store=sqlite:///jobs.db) "
        "to the URL"
    )


class AbsentSections:
    """Schedules, idempotency, batches, metrics, workers, alerts and audit without a store."""

    _audit_warned = False

    # -- schedules, idempotency, batches: need a store -----------------------------------

    async def register_schedules(self, names: Sequence[str], *, now_ms: int) -> None:
        raise absent("schedules (cron / every tick states)")

    async def claim_tick(self, schedule: str, fire_ms: int, job: NewJob, *, now_ms: int) -> bool:
        raise absent("schedules (cron / every tick states)")

    async def schedule_states(self, *, limit: int = 1000) -> list[ScheduleState]:
        return []  # none can be stored

    async def save_schedule(self, name: str, definition: bytes, *, now_ms: int) -> None:
        raise absent("run-time schedules")

    async def delete_schedule(self, name: str) -> bool:
        raise absent("run-time schedules")

    async def once_claim(
        self, queue: str, key: str, *, owner: str, lease_ms: int, now_ms: int
    ) -> OnceClaim:
        raise absent("ctx.once")

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
        raise absent("ctx.once")

    async def once_release(self, queue: str, key: str, *, owner: str) -> bool:
        raise absent("ctx.once")

    async def create_batch(self, batch: BatchRecord) -> None:
        raise absent("batches (add_chunks)")

    async def expect_batch_chunks(
        self, queue: str, batch_id: str, first_index: int, count: int
    ) -> None:
        raise absent("batches (add_chunks)")

    async def seal_batch(
        self, queue: str, batch_id: str, *, total_chunks: int, total_items: int, now_ms: int
    ) -> BatchRecord | None:
        raise absent("batches (add_chunks)")

    async def record_batch_chunks(
        self,
        queue: str,
        batch_id: str,
        chunks: Sequence[tuple[int, JobState]],
        *,
        now_ms: int,
    ) -> BatchRecord | None:
        return None  # no batch can exist

    async def reconcile_batch(
        self, queue: str, batch_id: str, *, now_ms: int, limit: int = 1000
    ) -> BatchRecord | None:
        return None

    async def pending_batch_chunks(
        self, queue: str, batch_id: str, *, limit: int = 1000
    ) -> list[int]:
        return []

    async def finish_batch(
        self,
        queue: str,
        batch_id: str,
        *,
        outcome: str,
        follow_up: NewJob | None,
        now_ms: int,
    ) -> bool:
        return False

    async def get_batch(self, queue: str, batch_id: str) -> BatchRecord | None:
        return None

    async def list_batches(
        self, queue: str, *, unfinished: bool = False, limit: int = 100
    ) -> list[BatchRecord]:
        return []

    async def cancel_batch(self, queue: str, batch_id: str, *, now_ms: int) -> BatchRecord | None:
        return None

    # -- metrics, workers, alerts, audit ----------------------------------------------------

    async def record_metrics(self, samples: Sequence[MetricSample], *, now_ms: int) -> None:
        return None  # dropped: nowhere to keep them (Capabilities.metrics is False)

    async def read_metrics(
        self, queue: str, *, resolution: Resolution, since_ms: int, until_ms: int
    ) -> list[MetricBucket]:
        raise absent("metrics history")

    async def read_metric_totals(self, queue: str) -> dict[str, dict[str, int]]:
        raise absent("metric totals")

    async def worker_beat(
        self, worker_id: str, info: bytes, *, expires_ms: int, now_ms: int
    ) -> None:
        return None  # dropped, like metrics

    async def worker_gone(self, worker_id: str) -> None:
        return None

    async def list_workers(self, *, now_ms: int, limit: int = 1000) -> list[bytes]:
        raise absent("listing live workers")

    async def alert_states(self, *, limit: int = 1000) -> list[StoredAlert]:
        return []  # none can be stored

    async def alert_transition(
        self, key: str, state: bytes, *, version: int, note: bytes | None, now_ms: int
    ) -> bool:
        raise absent("alert states")

    async def alert_history(self, *, limit: int = 100) -> list[bytes]:
        return []

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        if entries and not self._audit_warned:
            self._audit_warned = True
            log.warning(
                "the audit trail is not recorded: this amqp:// backend has no record store "
                "(add ?store=redis://HOST:6379/0 to the URL, or App(audit=False) to silence)"
            )

    async def audit_query(
        self, where: AuditFilter, *, cursor: str | None = None, limit: int = 100
    ) -> AuditPage:
        raise absent("the audit trail")

    async def audit_prune(self, *, before_ms: int, limit: int = 1000) -> int:
        return 0
