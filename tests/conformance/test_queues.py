"""Queue-level reads and administration: pause, counts, listings, wake-ups."""

from __future__ import annotations

import asyncio
import time

from shigoto.backends import Backend
from shigoto.job import JobState

from .support import (
    T0,
    claim,
    claim_one,
    completion,
    enqueue,
    ids_claimed,
    lease_of,
    new_job,
)


async def test_a_paused_queue_yields_no_claims_until_resumed(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    assert not await backend.is_paused(queue_name)

    await backend.set_paused(queue_name, True)

    assert await backend.is_paused(queue_name)
    assert await claim(backend, queue_name) == []
    await backend.set_paused(queue_name, False)
    assert not await backend.is_paused(queue_name)
    assert await ids_claimed(backend, queue_name) == ["j1"]


async def test_enqueueing_works_while_a_queue_is_paused(backend: Backend, queue_name: str) -> None:
    await backend.set_paused(queue_name, True)

    [done] = await backend.enqueue([new_job(queue_name, "j1")], T0)

    assert (done.created, done.state) == (True, JobState.WAITING)
    assert (await backend.counts(queue_name))[JobState.WAITING] == 1
    assert await claim(backend, queue_name) == []
    await backend.set_paused(queue_name, False)
    assert await ids_claimed(backend, queue_name) == ["j1"]


async def test_pausing_one_queue_leaves_others_running(backend: Backend, queue_name: str) -> None:
    other = f"{queue_name}-other"
    await enqueue(backend, new_job(queue_name, "paused"), new_job(other, "running"))

    await backend.set_paused(queue_name, True)

    assert not await backend.is_paused(other)
    assert await ids_claimed(backend, other) == ["running"]


async def test_pausing_does_not_disturb_active_jobs(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    await backend.set_paused(queue_name, True)

    assert await backend.complete([completion(claimed, "ok")], T0 + 1) == [True]


async def test_counts_report_every_state(backend: Backend, queue_name: str) -> None:
    assert await backend.counts(queue_name) == dict.fromkeys(JobState, 0)

    await enqueue(
        backend,
        *(new_job(queue_name, f"j{i}") for i in range(5)),
        new_job(queue_name, "later", delay_ms=60_000),
    )
    done, dead, active = (await claim(backend, queue_name, limit=3))[:3]
    await backend.complete([completion(done)], T0 + 1)
    await backend.dead_letter(lease_of(dead), reason="unrecoverable", error=None, now_ms=T0 + 1)
    await backend.cancel(queue_name, "j4", now_ms=T0 + 1)

    counts = await backend.counts(queue_name)
    assert set(counts) == set(JobState)
    assert counts == {
        JobState.WAITING: 1,
        JobState.DELAYED: 1,
        JobState.ACTIVE: 1,
        JobState.COMPLETED: 1,
        JobState.DEAD: 1,
        JobState.CANCELLED: 1,
    }
    assert active.record.state is JobState.ACTIVE


async def test_waiting_jobs_are_listed_in_run_order(backend: Backend, queue_name: str) -> None:
    await enqueue(
        backend,
        new_job(queue_name, "a"),
        new_job(queue_name, "b", priority=2),
        new_job(queue_name, "c"),
        new_job(queue_name, "d", priority=1),
    )

    listed = [j.id for j in await backend.list_jobs(queue_name, JobState.WAITING)]

    assert listed == ["b", "d", "a", "c"]


async def test_delayed_jobs_are_listed_by_due_time(backend: Backend, queue_name: str) -> None:
    await enqueue(
        backend,
        new_job(queue_name, "in-3s", delay_ms=3_000),
        new_job(queue_name, "in-1s", delay_ms=1_000, priority=-1),
        new_job(queue_name, "in-2s", delay_ms=2_000, priority=7),
    )

    listed = [j.id for j in await backend.list_jobs(queue_name, JobState.DELAYED)]

    assert listed == ["in-1s", "in-2s", "in-3s"]


async def test_completed_jobs_are_listed_newest_first_and_paginate(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, *(new_job(queue_name, f"j{i}") for i in range(7)))
    for i in range(7):
        claimed = await claim_one(backend, queue_name, now=T0 + i)
        await backend.complete([completion(claimed, i)], T0 + 100 * i)

    first = await backend.list_jobs(queue_name, JobState.COMPLETED, limit=3)
    second = await backend.list_jobs(queue_name, JobState.COMPLETED, offset=3, limit=3)
    third = await backend.list_jobs(queue_name, JobState.COMPLETED, offset=6, limit=3)
    beyond = await backend.list_jobs(queue_name, JobState.COMPLETED, offset=7, limit=3)

    assert [j.id for j in first] == ["j6", "j5", "j4"]
    assert [j.id for j in second] == ["j3", "j2", "j1"]
    assert [j.id for j in third] == ["j0"]
    assert beyond == []
    assert first[0].result_value == 6


async def test_waiting_jobs_paginate_without_gaps_or_repeats(
    backend: Backend, queue_name: str
) -> None:
    ids = [f"j{i:02d}" for i in range(10)]
    await enqueue(backend, *(new_job(queue_name, i) for i in ids))

    pages = [
        [j.id for j in await backend.list_jobs(queue_name, JobState.WAITING, offset=o, limit=4)]
        for o in (0, 4, 8)
    ]

    assert pages == [ids[:4], ids[4:8], ids[8:]]


async def test_listing_is_scoped_to_queue_and_state(backend: Backend, queue_name: str) -> None:
    other = f"{queue_name}-other"
    await enqueue(backend, new_job(queue_name, "mine"), new_job(other, "theirs"))

    assert [j.id for j in await backend.list_jobs(queue_name, JobState.WAITING)] == ["mine"]
    assert await backend.list_jobs(queue_name, JobState.ACTIVE) == []


async def test_getting_an_unknown_job_returns_none(backend: Backend, queue_name: str) -> None:
    assert await backend.get(queue_name, "does-not-exist") is None
    await enqueue(backend, new_job(queue_name, "exists"))
    assert await backend.get(f"{queue_name}-other", "exists") is None


async def test_queues_lists_every_queue_that_holds_jobs_sorted(
    backend: Backend, queue_name: str
) -> None:
    names = [f"{queue_name}-b", f"{queue_name}-a", queue_name]
    for name in names:
        await enqueue(backend, new_job(name, "j"))

    listed = await backend.queues()

    assert [q for q in listed if q.startswith(queue_name)] == sorted(names)
    assert listed == sorted(listed)


async def test_wait_for_work_returns_within_its_timeout(backend: Backend, queue_name: str) -> None:
    started = time.monotonic()

    await asyncio.wait_for(backend.wait_for_work([queue_name], 0.2), timeout=2.0)

    assert time.monotonic() - started < 1.5


async def test_wait_for_work_returns_soon_after_an_enqueue(
    backend: Backend, queue_name: str
) -> None:
    waiter = asyncio.create_task(backend.wait_for_work([queue_name], 5.0))
    await asyncio.sleep(0.01)
    started = time.monotonic()

    await enqueue(backend, new_job(queue_name, "wake-up"))
    await asyncio.wait_for(waiter, timeout=3.0)

    assert time.monotonic() - started < 3.0
    assert await ids_claimed(backend, queue_name) == ["wake-up"]
