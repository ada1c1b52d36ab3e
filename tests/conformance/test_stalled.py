"""Jobs of a worker that stopped heartbeating are taken back, up to a limit of stalls."""

from __future__ import annotations

import pytest

from shigoto.backends import Backend
from shigoto.errors import LeaseLost
from shigoto.job import JobState

from .support import (
    LEASE_MS,
    T0,
    attempt_error,
    claim,
    claim_one,
    completion,
    enqueue,
    lease_of,
    new_job,
    record,
)

EXPIRED = T0 + LEASE_MS + 1
"""A moment after a lease taken at ``T0`` ran out."""


async def test_a_job_whose_lease_expired_is_recovered_and_the_old_token_is_refused(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1", max_stalls=1))
    crashed = await claim_one(backend, queue_name, worker_id="crashed-worker")

    recovered = await backend.recover_stalled(queue_name, now_ms=EXPIRED, limit=10)

    assert [(r.job_id, r.state) for r in recovered] == [("j1", JobState.WAITING)]
    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.WAITING
    assert (stored.stalls, stored.attempts) == (1, 0)
    [entry] = stored.errors
    assert entry.error_type == "Stalled"
    assert entry.worker_id == "crashed-worker"
    assert entry.ended_ms == EXPIRED

    assert await backend.complete([completion(crashed, "late")], EXPIRED + 1) == [False]
    with pytest.raises(LeaseLost):
        await backend.retry(
            lease_of(crashed), run_at_ms=EXPIRED, error=attempt_error(1), now_ms=EXPIRED
        )
    [status] = await backend.extend([lease_of(crashed)], lease_ms=LEASE_MS, now_ms=EXPIRED + 1)
    assert not status.held
    assert (await record(backend, queue_name, "j1")).state is JobState.WAITING


async def test_a_recovered_job_is_taken_by_another_worker_which_alone_can_finish_it(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    crashed = await claim_one(backend, queue_name, worker_id="crashed")
    await backend.recover_stalled(queue_name, now_ms=EXPIRED, limit=10)

    rescuer = await claim_one(backend, queue_name, now=EXPIRED + 1, worker_id="rescuer")

    assert rescuer.record.attempts == 1
    assert rescuer.record.stalls == 1
    assert rescuer.token != crashed.token
    assert await backend.complete([completion(crashed, "crashed")], EXPIRED + 2) == [False]
    assert await backend.complete([completion(rescuer, "rescued")], EXPIRED + 3) == [True]
    stored = await record(backend, queue_name, "j1")
    assert stored.result_value == "rescued"
    assert stored.worker_id == "rescuer"


async def test_a_job_that_stalls_more_than_max_stalls_times_goes_dead(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1", max_stalls=2))
    now = T0
    states = []
    for _ in range(3):
        await claim_one(backend, queue_name, now=now)
        now += LEASE_MS + 1
        [recovered] = await backend.recover_stalled(queue_name, now_ms=now, limit=10)
        states.append(recovered.state)

    assert states == [JobState.WAITING, JobState.WAITING, JobState.DEAD]
    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.DEAD
    assert stored.reason == "stalled_too_often"
    assert stored.stalls == 3
    assert [e.error_type for e in stored.errors] == ["Stalled"] * 3
    assert await claim(backend, queue_name, now=now + 1) == []


async def test_with_max_stalls_zero_the_first_stall_is_fatal(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1", max_stalls=0))
    await claim_one(backend, queue_name)

    [recovered] = await backend.recover_stalled(queue_name, now_ms=EXPIRED, limit=10)

    assert recovered.state is JobState.DEAD
    assert (await record(backend, queue_name, "j1")).reason == "stalled_too_often"


async def test_a_live_lease_is_not_recovered(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    assert await backend.recover_stalled(queue_name, now_ms=T0 + LEASE_MS - 1, limit=10) == []

    stored = await record(backend, queue_name, "j1")
    assert (stored.state, stored.stalls) == (JobState.ACTIVE, 0)
    assert await backend.complete([completion(claimed)], T0 + LEASE_MS - 1) == [True]


async def test_extending_a_lease_keeps_the_job_from_being_recovered(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    heartbeat = T0 + LEASE_MS - 1_000
    [status] = await backend.extend([lease_of(claimed)], lease_ms=LEASE_MS, now_ms=heartbeat)

    assert status.held and not status.cancel_requested
    assert (await record(backend, queue_name, "j1")).lease_until_ms == heartbeat + LEASE_MS
    assert await backend.recover_stalled(queue_name, now_ms=EXPIRED, limit=10) == []
    assert await backend.complete([completion(claimed)], EXPIRED) == [True]
    recovered = await backend.recover_stalled(queue_name, now_ms=heartbeat + LEASE_MS + 1, limit=9)
    assert recovered == []


async def test_recovery_takes_at_most_its_limit_and_only_expired_leases(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, *(new_job(queue_name, f"old-{i}") for i in range(3)))
    await claim(backend, queue_name, limit=3, now=T0)
    await enqueue(backend, new_job(queue_name, "fresh", now=T0 + 20_000), now=T0 + 20_000)
    await claim(backend, queue_name, limit=1, now=T0 + 20_000)

    first = await backend.recover_stalled(queue_name, now_ms=EXPIRED, limit=2)
    second = await backend.recover_stalled(queue_name, now_ms=EXPIRED, limit=2)

    assert len(first) == 2
    assert len(second) == 1
    assert {r.job_id for r in first + second} == {"old-0", "old-1", "old-2"}
    assert (await record(backend, queue_name, "fresh")).state is JobState.ACTIVE


async def test_stall_recovery_is_scoped_to_its_queue(backend: Backend, queue_name: str) -> None:
    other = f"{queue_name}-other"
    await enqueue(backend, new_job(other, "elsewhere"))
    await claim_one(backend, other)

    assert await backend.recover_stalled(queue_name, now_ms=EXPIRED, limit=10) == []
    assert (await record(backend, other, "elsewhere")).state is JobState.ACTIVE


async def test_a_recovered_job_keeps_its_priority_place(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "stalled", priority=5))
    await claim_one(backend, queue_name)
    await enqueue(
        backend,
        new_job(queue_name, "normal", now=T0 + 10),
        new_job(queue_name, "also-high", now=T0 + 10, priority=5),
        now=T0 + 10,
    )
    await backend.recover_stalled(queue_name, now_ms=EXPIRED, limit=10)

    got = [c.record.id for c in await claim(backend, queue_name, now=EXPIRED + 1)]

    assert got == ["stalled", "also-high", "normal"]
