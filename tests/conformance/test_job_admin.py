"""The ``job admin`` section of the contract: removing a job and promoting a delayed one
(the dashboard's remove / promote actions, issue 7)."""

from __future__ import annotations

import pytest

from shigoto.backends import Backend
from shigoto.backends.contract import DeadFilter
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


async def _in_state(backend: Backend, queue: str, job_id: str, state: JobState) -> None:
    """Bring job ``job_id`` of ``queue`` into ``state`` through the contract."""
    delay_ms = 60_000 if state is JobState.DELAYED else 0
    await enqueue(backend, new_job(queue, job_id, delay_ms=delay_ms, attempts=1))
    if state in (JobState.WAITING, JobState.DELAYED):
        return
    claimed = await claim_one(backend, queue)
    assert claimed.record.id == job_id
    if state is JobState.COMPLETED:
        [ok] = await backend.complete([completion(claimed, {"ok": True})], T0 + 5)
        assert ok
    elif state is JobState.DEAD:
        await backend.dead_letter(
            lease_of(claimed), reason="failed", error=attempt_error(), now_ms=T0 + 5
        )


@pytest.mark.parametrize(
    "state", [JobState.WAITING, JobState.DELAYED, JobState.COMPLETED, JobState.DEAD]
)
async def test_remove_deletes_a_job_that_is_not_active_and_its_count(
    backend: Backend, queue_name: str, state: JobState
) -> None:
    await _in_state(backend, queue_name, "j1", state)
    await enqueue(backend, new_job(queue_name, "other"), new_job(queue_name, "later", delay_ms=9))
    before = await backend.counts(queue_name)
    assert before[state] >= 1

    assert await backend.remove(queue_name, "j1", now_ms=T0 + 10) is True

    assert await backend.get(queue_name, "j1") is None
    after = await backend.counts(queue_name)
    assert after == {**before, state: before[state] - 1}
    listed = await backend.list_jobs(queue_name, state)
    assert "j1" not in [r.id for r in listed]
    assert await backend.remove(queue_name, "j1", now_ms=T0 + 11) is False
    if state is JobState.DEAD:
        page = await backend.list_dead(queue_name, DeadFilter())
        assert [d.id for d in page.items] == []
    # the neighbours are untouched and still flow
    ids = [c.record.id for c in await claim(backend, queue_name, now=T0 + 20, limit=10)]
    assert "other" in ids and "j1" not in ids


async def test_remove_of_a_cancelled_job(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    assert await backend.cancel(queue_name, "j1", now_ms=T0 + 1) is JobState.CANCELLED

    assert await backend.remove(queue_name, "j1", now_ms=T0 + 2) is True
    assert await backend.get(queue_name, "j1") is None
    assert (await backend.counts(queue_name))[JobState.CANCELLED] == 0


async def test_remove_refuses_an_active_job_and_leaves_it_untouched(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)
    before = await record(backend, queue_name, "j1")

    assert await backend.remove(queue_name, "j1", now_ms=T0 + 10) is False

    assert await record(backend, queue_name, "j1") == before
    assert (await backend.counts(queue_name))[JobState.ACTIVE] == 1
    [status] = await backend.extend([lease_of(claimed)], lease_ms=LEASE_MS, now_ms=T0 + 20)
    assert status.held
    [ok] = await backend.complete([completion(claimed)], T0 + 30)
    assert ok and (await record(backend, queue_name, "j1")).state is JobState.COMPLETED


async def test_a_removed_id_can_be_added_again(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "j1", data={"v": 1}))
    assert await backend.remove(queue_name, "j1", now_ms=T0 + 1)

    [again] = await backend.enqueue([new_job(queue_name, "j1", data={"v": 2})], T0 + 2)

    assert again.created and again.state is JobState.WAITING
    assert (await record(backend, queue_name, "j1")).data == {"v": 2}


async def test_promote_makes_a_delayed_job_claimable_now(backend: Backend, queue_name: str) -> None:
    # a minute, not an hour: on RabbitMQ the delayed copy's queue outlives its delay, and
    # a test's queues should be gone soon after it
    await enqueue(backend, new_job(queue_name, "later", delay_ms=60_000))
    assert await claim(backend, queue_name, now=T0 + 100) == []

    assert await backend.promote(queue_name, "later", now_ms=T0 + 100) is True

    stored = await record(backend, queue_name, "later")
    assert (stored.state, stored.ready_ms) == (JobState.WAITING, T0 + 100)
    counts = await backend.counts(queue_name)
    assert (counts[JobState.WAITING], counts[JobState.DELAYED]) == (1, 0)
    [claimed] = await claim(backend, queue_name, now=T0 + 101)
    assert claimed.record.id == "later"


async def test_a_promoted_job_is_ordered_as_ready_at_the_promotion(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "later", delay_ms=60_000))
    await enqueue(backend, new_job(queue_name, "first"), now=T0)
    assert await backend.promote(queue_name, "later", now_ms=T0 + 50)
    await enqueue(backend, new_job(queue_name, "last", now=T0 + 60), now=T0 + 60)

    claimed = await claim(backend, queue_name, now=T0 + 70, limit=3)

    assert [c.record.id for c in claimed] == ["first", "later", "last"]


@pytest.mark.parametrize("state", [JobState.WAITING, JobState.ACTIVE, JobState.COMPLETED])
async def test_promote_of_a_job_that_is_not_delayed_changes_nothing(
    backend: Backend, queue_name: str, state: JobState
) -> None:
    await _in_state(backend, queue_name, "j1", state)
    before = await record(backend, queue_name, "j1")

    assert await backend.promote(queue_name, "j1", now_ms=T0 + 10) is False

    assert await record(backend, queue_name, "j1") == before


async def test_unknown_ids_are_neither_removed_nor_promoted(
    backend: Backend, queue_name: str
) -> None:
    assert await backend.remove(queue_name, "nope", now_ms=T0) is False
    assert await backend.promote(queue_name, "nope", now_ms=T0) is False
    await enqueue(backend, new_job(queue_name, "j1", delay_ms=10))
    other = queue_name + "-other"
    assert await backend.remove(other, "j1", now_ms=T0) is False
    assert await backend.promote(other, "j1", now_ms=T0) is False
    assert (await record(backend, queue_name, "j1")).state is JobState.DELAYED


async def test_a_removed_delayed_job_is_never_promoted_by_its_due_time(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "later", delay_ms=1_000))
    assert await backend.remove(queue_name, "later", now_ms=T0 + 1)

    assert await backend.promote_due(queue_name, now_ms=T0 + 5_000, limit=10) == 0
    assert await claim(backend, queue_name, now=T0 + 5_000) == []
