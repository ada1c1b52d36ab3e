"""Which job a claim hands out: priority, FIFO, limits, delays, and no double claims."""

from __future__ import annotations

import asyncio

from shigoto.backends import Backend, open_backend
from shigoto.job import MAX_PRIORITY, MIN_PRIORITY, JobState

from .support import T0, claim, enqueue, ids_claimed, new_job, record


async def test_higher_priority_jobs_are_claimed_first(backend: Backend, queue_name: str) -> None:
    await enqueue(
        backend,
        new_job(queue_name, "low", priority=-5),
        new_job(queue_name, "normal", priority=0),
        new_job(queue_name, "urgent", priority=10),
        new_job(queue_name, "high", priority=5),
    )

    assert await ids_claimed(backend, queue_name) == ["urgent", "high", "normal", "low"]


async def test_jobs_of_one_priority_are_claimed_in_enqueue_order_across_batches(
    backend: Backend, queue_name: str
) -> None:
    ids = [f"job-{i:02d}" for i in range(12)]
    await enqueue(backend, *(new_job(queue_name, i) for i in ids[:5]))
    await enqueue(backend, *(new_job(queue_name, i) for i in ids[5:]))

    got = []
    for _ in range(4):
        got += await ids_claimed(backend, queue_name, limit=3)

    assert got == ids


async def test_fifo_holds_within_each_priority_when_priorities_interleave(
    backend: Backend, queue_name: str
) -> None:
    jobs = [new_job(queue_name, f"p{i % 3}-{i:02d}", priority=i % 3) for i in range(15)]
    for job in jobs:  # one enqueue call per job: order must come from the backend
        await enqueue(backend, job)

    got = []
    while batch := await ids_claimed(backend, queue_name, limit=4):
        got += batch

    expected = sorted((j for j in jobs), key=lambda j: -j.options.priority)
    assert got == [j.id for j in expected]


async def test_extreme_priorities_keep_their_order(backend: Backend, queue_name: str) -> None:
    await enqueue(
        backend,
        new_job(queue_name, "min", priority=MIN_PRIORITY),
        new_job(queue_name, "max-1", priority=MAX_PRIORITY),
        new_job(queue_name, "zero", priority=0),
        new_job(queue_name, "max-2", priority=MAX_PRIORITY),
        new_job(queue_name, "min+1", priority=MIN_PRIORITY + 1),
    )

    assert await ids_claimed(backend, queue_name) == ["max-1", "max-2", "zero", "min+1", "min"]


async def test_a_claim_never_returns_more_than_its_limit(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, *(new_job(queue_name, f"j{i}") for i in range(5)))

    assert len(await claim(backend, queue_name, limit=2)) == 2
    assert len(await claim(backend, queue_name, limit=1)) == 1
    assert await claim(backend, queue_name, limit=0) == []
    assert len(await claim(backend, queue_name, limit=10)) == 2
    assert await claim(backend, queue_name, limit=10) == []


async def test_claims_are_scoped_to_their_queue(backend: Backend, queue_name: str) -> None:
    other = f"{queue_name}-other"
    await enqueue(backend, new_job(other, "elsewhere"), new_job(queue_name, "here"))

    assert await ids_claimed(backend, queue_name) == ["here"]
    assert await ids_claimed(backend, other) == ["elsewhere"]


async def test_two_concurrent_claimers_never_get_the_same_job(
    backend_url: str, queue_name: str
) -> None:
    first, second = open_backend(backend_url), open_backend(backend_url)
    await first.connect()
    await second.connect()
    try:
        ids = [f"j{i:03d}" for i in range(60)]
        await enqueue(first, *(new_job(queue_name, i) for i in ids))

        seen: list[str] = []
        for round_ in range(8):
            a, b = await asyncio.gather(
                claim(first, queue_name, limit=5, now=T0 + round_, worker_id="a"),
                claim(second, queue_name, limit=5, now=T0 + round_, worker_id="b"),
            )
            seen += [c.record.id for c in a + b]

        assert len(seen) == len(set(seen)), "a job was handed to two claimers"
        assert sorted(seen) == ids
        counts = await first.counts(queue_name)
        assert counts[JobState.ACTIVE] == 60
        assert counts[JobState.WAITING] == 0
    finally:
        await first.close()
        await second.close()


async def test_many_concurrent_claimers_split_the_jobs_without_overlap(
    backend_url: str, queue_name: str
) -> None:
    backends = [open_backend(backend_url) for _ in range(4)]
    for instance in backends:
        await instance.connect()
    try:
        await enqueue(backends[0], *(new_job(queue_name, f"j{i:02d}") for i in range(30)))

        batches = await asyncio.gather(
            *(
                claim(instance, queue_name, limit=10, worker_id=f"w{n}")
                for n, instance in enumerate(backends)
            )
        )

        seen = [c.record.id for batch in batches for c in batch]
        assert len(seen) == len(set(seen)) == 30
        tokens = {c.token for batch in batches for c in batch}
        assert len(tokens) == 30
    finally:
        for instance in backends:
            await instance.close()


async def test_a_delayed_job_is_claimable_only_once_its_time_has_come(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "later", delay_ms=60_000))

    assert await claim(backend, queue_name, now=T0) == []
    assert await claim(backend, queue_name, now=T0 + 59_999) == []
    assert (await record(backend, queue_name, "later")).state is JobState.DELAYED
    assert await ids_claimed(backend, queue_name, now=T0 + 60_000) == ["later"]


async def test_a_due_delayed_job_is_claimed_without_an_explicit_promotion(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "delayed", delay_ms=100))
    await enqueue(backend, new_job(queue_name, "immediate", now=T0 + 150), now=T0 + 150)

    assert await ids_claimed(backend, queue_name, now=T0 + 200) == ["delayed", "immediate"]


async def test_a_due_high_priority_delayed_job_beats_earlier_due_low_priority_ones(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(
        backend,
        *(new_job(queue_name, f"low-{i}", delay_ms=10 + i, priority=0) for i in range(3)),
        new_job(queue_name, "high", delay_ms=50, priority=9),
    )

    assert await ids_claimed(backend, queue_name, now=T0 + 100, limit=1) == ["high"]
    assert await ids_claimed(backend, queue_name, now=T0 + 100) == ["low-0", "low-1", "low-2"]


async def test_a_job_with_a_past_ready_time_is_waiting(backend: Backend, queue_name: str) -> None:
    job = new_job(queue_name, "past", now=T0 - 5_000)
    [done] = await backend.enqueue([job], T0)

    assert done.state is JobState.WAITING
    assert await ids_claimed(backend, queue_name) == ["past"]
