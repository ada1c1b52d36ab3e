"""Small builders shared by the conformance tests.

Everything goes through the :class:`~shigoto.backends.contract.Backend` contract with
explicit ``now_ms`` values: time is arithmetic here, never a sleep.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from shigoto.backends import Backend
from shigoto.backends.contract import Claimed, Completion, Lease, NewJob
from shigoto.job import AttemptError, JobOptions, JobRecord

T0 = 1_700_000_000_000
"""A fixed "now" (ms since the epoch) that every test starts from."""
LEASE_MS = 30_000
WORKER = "worker-a"


def new_job(
    queue: str,
    job_id: str | None = None,
    *,
    now: int = T0,
    delay_ms: int = 0,
    name: str = "task",
    data: dict[str, Any] | None = None,
    **options: Any,
) -> NewJob:
    """A job for ``queue``; ``options`` are :class:`JobOptions` fields."""
    return NewJob(
        id=job_id or uuid.uuid4().hex,
        queue=queue,
        name=name,
        payload=msgspec.json.encode(data if data is not None else {"n": 1}),
        options=JobOptions(**options),
        created_ms=now,
        ready_ms=now + delay_ms,
    )


def lease_of(claimed: Claimed) -> Lease:
    return Lease(claimed.record.queue, claimed.record.id, claimed.token)


def attempt_error(
    attempt: int = 1, *, message: str = "boom", error_type: str = "ValueError", at: int = T0
) -> AttemptError:
    return AttemptError(
        attempt=attempt,
        error_type=error_type,
        message=message,
        traceback="Traceback (most recent call last): ...",
        worker_id=WORKER,
        started_ms=at,
        ended_ms=at,
    )


def completion(claimed: Claimed, result: Any = None) -> Completion:
    encoded = None if result is None else msgspec.json.encode(result)
    return Completion(lease_of(claimed), encoded, claimed.record.started_ms or T0)


async def enqueue(backend: Backend, *jobs: NewJob, now: int = T0) -> None:
    results = await backend.enqueue(list(jobs), now)
    assert all(r.created for r in results), results


async def claim(
    backend: Backend,
    queue: str,
    *,
    now: int = T0,
    limit: int = 10,
    lease_ms: int = LEASE_MS,
    worker_id: str = WORKER,
) -> list[Claimed]:
    return await backend.claim(
        queue, limit=limit, worker_id=worker_id, lease_ms=lease_ms, now_ms=now
    )


async def claim_one(backend: Backend, queue: str, *, now: int = T0, **kw: Any) -> Claimed:
    claimed = await claim(backend, queue, now=now, limit=1, **kw)
    assert len(claimed) == 1, f"expected one job to claim, got {claimed}"
    return claimed[0]


async def record(backend: Backend, queue: str, job_id: str) -> JobRecord:
    found = await backend.get(queue, job_id)
    assert found is not None, f"job {job_id} is gone"
    return found


async def ids_claimed(backend: Backend, queue: str, **kw: Any) -> list[str]:
    return [c.record.id for c in await claim(backend, queue, **kw)]


def storage_name(backend: Backend) -> str:
    """The name of the backend that actually stores the records: a composed backend
    (RabbitMQ over a record store) behaves as its store does for what it delegates."""
    store = getattr(backend, "store", backend)
    name: str = store.capabilities.name
    return name
