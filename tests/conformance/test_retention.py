"""remove_on_complete / remove_on_fail: finished jobs are kept, trimmed or removed."""

from __future__ import annotations

import msgspec

from shigoto.backends import Backend
from shigoto.job import REMOVE_ALL, JobState, Retention

from .support import T0, claim_one, completion, enqueue, lease_of, new_job, record


async def finish(backend: Backend, queue: str, job_id: str, at: int, *, fail: bool = False) -> None:
    """Claim the next job (expected to be ``job_id``) and complete or dead-letter it."""
    claimed = await claim_one(backend, queue, now=at)
    assert claimed.record.id == job_id
    if fail:
        await backend.dead_letter(lease_of(claimed), reason="unrecoverable", error=None, now_ms=at)
    else:
        assert await backend.complete([completion(claimed, job_id)], at) == [True]


async def ids_in(backend: Backend, queue: str, state: JobState) -> list[str]:
    return [j.id for j in await backend.list_jobs(queue, state)]


async def test_completed_jobs_are_kept_by_default(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, *(new_job(queue_name, f"j{i}") for i in range(3)))
    for i in range(3):
        await finish(backend, queue_name, f"j{i}", T0 + i)

    assert await ids_in(backend, queue_name, JobState.COMPLETED) == ["j2", "j1", "j0"]


async def test_remove_on_complete_true_removes_the_job_as_it_completes(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "gone", remove_on_complete=REMOVE_ALL))
    claimed = await claim_one(backend, queue_name)

    assert await backend.complete([completion(claimed, "r")], T0 + 1) == [True]

    assert await backend.get(queue_name, "gone") is None
    assert (await backend.counts(queue_name))[JobState.COMPLETED] == 0


async def test_remove_on_complete_n_keeps_the_newest_n_completed_jobs(
    backend: Backend, queue_name: str
) -> None:
    keep_two = Retention(count=2)
    await enqueue(
        backend, *(new_job(queue_name, f"j{i}", remove_on_complete=keep_two) for i in range(5))
    )
    for i in range(5):
        await finish(backend, queue_name, f"j{i}", T0 + 10 * i)

    assert await ids_in(backend, queue_name, JobState.COMPLETED) == ["j4", "j3"]
    assert await backend.get(queue_name, "j0") is None


async def test_a_count_policy_leaves_jobs_in_other_states_alone(
    backend: Backend, queue_name: str
) -> None:
    keep_one = Retention(count=1)
    await enqueue(
        backend,
        *(new_job(queue_name, f"j{i}", remove_on_complete=keep_one) for i in range(3)),
        new_job(queue_name, "later", delay_ms=10_000, remove_on_complete=keep_one),
    )
    await finish(backend, queue_name, "j0", T0 + 1)
    await finish(backend, queue_name, "j1", T0 + 2)
    dead = await claim_one(backend, queue_name, now=T0 + 3)
    await backend.dead_letter(lease_of(dead), reason="unrecoverable", error=None, now_ms=T0 + 3)

    counts = await backend.counts(queue_name)
    assert counts[JobState.COMPLETED] == 1
    assert counts[JobState.DEAD] == 1
    assert counts[JobState.DELAYED] == 1


async def test_age_based_retention_removes_completed_jobs_older_than_the_age(
    backend: Backend, queue_name: str
) -> None:
    one_minute = Retention(age_s=60)
    await enqueue(
        backend, *(new_job(queue_name, f"j{i}", remove_on_complete=one_minute) for i in range(3))
    )
    await finish(backend, queue_name, "j0", T0)
    await finish(backend, queue_name, "j1", T0 + 30_000)
    assert await ids_in(backend, queue_name, JobState.COMPLETED) == ["j1", "j0"]

    await finish(backend, queue_name, "j2", T0 + 75_000)

    assert await ids_in(backend, queue_name, JobState.COMPLETED) == ["j2", "j1"]


async def test_dead_jobs_are_kept_by_default(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, *(new_job(queue_name, f"j{i}") for i in range(3)))
    for i in range(3):
        await finish(backend, queue_name, f"j{i}", T0 + i, fail=True)

    assert await ids_in(backend, queue_name, JobState.DEAD) == ["j2", "j1", "j0"]


async def test_remove_on_fail_true_removes_a_job_as_it_dies(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "gone", remove_on_fail=REMOVE_ALL))

    await finish(backend, queue_name, "gone", T0, fail=True)

    assert await backend.get(queue_name, "gone") is None
    assert (await backend.counts(queue_name))[JobState.DEAD] == 0


async def test_remove_on_fail_n_keeps_the_newest_n_dead_jobs(
    backend: Backend, queue_name: str
) -> None:
    keep_two = Retention(count=2)
    await enqueue(
        backend, *(new_job(queue_name, f"j{i}", remove_on_fail=keep_two) for i in range(4))
    )
    for i in range(4):
        await finish(backend, queue_name, f"j{i}", T0 + 10 * i, fail=True)

    assert await ids_in(backend, queue_name, JobState.DEAD) == ["j3", "j2"]


async def test_age_based_retention_removes_old_dead_jobs(backend: Backend, queue_name: str) -> None:
    ten_seconds = Retention(age_s=10)
    await enqueue(
        backend, *(new_job(queue_name, f"j{i}", remove_on_fail=ten_seconds) for i in range(2))
    )
    await finish(backend, queue_name, "j0", T0, fail=True)

    await finish(backend, queue_name, "j1", T0 + 10_001, fail=True)

    assert await ids_in(backend, queue_name, JobState.DEAD) == ["j1"]


async def test_remove_on_complete_does_not_touch_dead_jobs_and_vice_versa(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(
        backend,
        new_job(queue_name, "dies", remove_on_complete=REMOVE_ALL),
        new_job(queue_name, "completes", remove_on_fail=REMOVE_ALL),
    )

    await finish(backend, queue_name, "dies", T0, fail=True)
    await finish(backend, queue_name, "completes", T0 + 1)

    assert (await record(backend, queue_name, "dies")).state is JobState.DEAD
    assert (await record(backend, queue_name, "completes")).state is JobState.COMPLETED


async def test_a_removed_job_id_can_be_enqueued_again(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "once", remove_on_complete=REMOVE_ALL))
    await finish(backend, queue_name, "once", T0)

    [again] = await backend.enqueue([new_job(queue_name, "once", now=T0 + 1)], T0 + 1)

    assert (again.created, again.state) == (True, JobState.WAITING)


async def test_a_completion_carrying_the_job_s_retention_does_what_its_options_say(
    backend: Backend, queue_name: str
) -> None:
    """Workers pass the job's ``remove_on_complete`` along (a backend may then skip
    reading it); the outcome is the one the stored options give, fencing included."""
    keep_one = Retention(count=1)
    await enqueue(
        backend,
        new_job(queue_name, "gone", remove_on_complete=REMOVE_ALL),
        *(new_job(queue_name, f"k{i}", remove_on_complete=keep_one) for i in range(2)),
    )
    for job_id, policy in (("gone", REMOVE_ALL), ("k0", keep_one), ("k1", keep_one)):
        claimed = await claim_one(backend, queue_name)
        assert claimed.record.id == job_id
        hinted = msgspec.structs.replace(completion(claimed, job_id), retention=policy)
        forged = msgspec.structs.replace(lease_of(claimed), token="not-the-token")
        stale = msgspec.structs.replace(hinted, lease=forged)
        assert await backend.complete([stale], T0 + 1) == [False]
        assert await backend.complete([hinted], T0 + 1) == [True]

    assert await backend.get(queue_name, "gone") is None
    assert await ids_in(backend, queue_name, JobState.COMPLETED) == ["k1"]
