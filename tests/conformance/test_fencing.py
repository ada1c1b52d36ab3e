"""A lease token is the only ticket to finish a job: a wrong or stale one changes nothing."""

from __future__ import annotations

import msgspec
import pytest

from shigoto.backends import Backend
from shigoto.backends.contract import Claimed, Completion, Lease
from shigoto.errors import LeaseLost
from shigoto.job import JobRecord, JobState

from .support import (
    LEASE_MS,
    T0,
    attempt_error,
    claim_one,
    completion,
    enqueue,
    lease_of,
    new_job,
    record,
)


def forged(claimed: Claimed) -> Lease:
    return Lease(claimed.record.queue, claimed.record.id, "not-the-token")


async def active_job(backend: Backend, queue: str) -> tuple[Claimed, JobRecord]:
    await enqueue(backend, new_job(queue, "j1"))
    claimed = await claim_one(backend, queue)
    return claimed, await record(backend, queue, "j1")


async def test_completing_with_a_wrong_token_is_refused_and_changes_nothing(
    backend: Backend, queue_name: str
) -> None:
    claimed, before = await active_job(backend, queue_name)

    done = await backend.complete([Completion(forged(claimed), b'"x"', T0)], T0 + 1)

    assert done == [False]
    assert await record(backend, queue_name, "j1") == before


async def test_a_batch_completion_refuses_only_the_jobs_whose_lease_is_lost(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "a"), new_job(queue_name, "b"))
    a = await claim_one(backend, queue_name)
    b = await claim_one(backend, queue_name)

    done = await backend.complete(
        [completion(a, 1), Completion(forged(b), b"2", T0), completion(b, 3)], T0 + 1
    )

    assert done == [True, False, True]
    assert (await record(backend, queue_name, "a")).result_value == 1
    assert (await record(backend, queue_name, "b")).result_value == 3


async def test_a_job_cannot_be_completed_twice(backend: Backend, queue_name: str) -> None:
    claimed, _ = await active_job(backend, queue_name)
    assert await backend.complete([completion(claimed, "first")], T0 + 1) == [True]

    assert await backend.complete([completion(claimed, "second")], T0 + 2) == [False]

    stored = await record(backend, queue_name, "j1")
    assert stored.result_value == "first"
    assert stored.finished_ms == T0 + 1


async def test_retrying_with_a_wrong_token_raises_lease_lost_and_changes_nothing(
    backend: Backend, queue_name: str
) -> None:
    claimed, before = await active_job(backend, queue_name)

    with pytest.raises(LeaseLost):
        await backend.retry(
            forged(claimed), run_at_ms=T0 + 1_000, error=attempt_error(1), now_ms=T0 + 1
        )

    assert await record(backend, queue_name, "j1") == before


async def test_dead_lettering_with_a_wrong_token_raises_lease_lost_and_changes_nothing(
    backend: Backend, queue_name: str
) -> None:
    claimed, before = await active_job(backend, queue_name)

    with pytest.raises(LeaseLost):
        await backend.dead_letter(
            forged(claimed), reason="unrecoverable", error=attempt_error(1), now_ms=T0 + 1
        )

    assert await record(backend, queue_name, "j1") == before


async def test_progress_with_a_wrong_token_raises_lease_lost_and_changes_nothing(
    backend: Backend, queue_name: str
) -> None:
    claimed, before = await active_job(backend, queue_name)

    with pytest.raises(LeaseLost):
        await backend.update_progress(forged(claimed), msgspec.json.encode(50))

    assert await record(backend, queue_name, "j1") == before


async def test_releasing_with_a_wrong_token_reports_false_and_changes_nothing(
    backend: Backend, queue_name: str
) -> None:
    claimed, before = await active_job(backend, queue_name)

    assert await backend.release([forged(claimed)], now_ms=T0 + 1, note=attempt_error(0)) == [False]

    assert await record(backend, queue_name, "j1") == before


async def test_extending_with_a_wrong_token_reports_not_held_and_keeps_the_lease(
    backend: Backend, queue_name: str
) -> None:
    claimed, before = await active_job(backend, queue_name)

    [status] = await backend.extend([forged(claimed)], lease_ms=LEASE_MS, now_ms=T0 + 10_000)

    assert (status.job_id, status.held) == ("j1", False)
    assert await record(backend, queue_name, "j1") == before


async def test_extending_an_unknown_job_reports_not_held(backend: Backend, queue_name: str) -> None:
    [status] = await backend.extend(
        [Lease(queue_name, "missing", "token")], lease_ms=LEASE_MS, now_ms=T0
    )

    assert not status.held


async def test_a_stale_token_from_an_earlier_attempt_cannot_touch_the_current_one(
    backend: Backend, queue_name: str
) -> None:
    first, _ = await active_job(backend, queue_name)
    await backend.retry(lease_of(first), run_at_ms=T0, error=attempt_error(1), now_ms=T0)
    second = await claim_one(backend, queue_name, now=T0 + 1)
    current = await record(backend, queue_name, "j1")
    stale = lease_of(first)

    assert await backend.complete([completion(first, "stale")], T0 + 2) == [False]
    with pytest.raises(LeaseLost):
        await backend.retry(stale, run_at_ms=T0 + 9, error=attempt_error(1), now_ms=T0 + 2)
    with pytest.raises(LeaseLost):
        await backend.dead_letter(stale, reason="x", error=None, now_ms=T0 + 2)
    with pytest.raises(LeaseLost):
        await backend.update_progress(stale, b"1")
    assert await backend.release([stale], now_ms=T0 + 2) == [False]
    [status] = await backend.extend([stale], lease_ms=LEASE_MS, now_ms=T0 + 2)
    assert not status.held

    assert await record(backend, queue_name, "j1") == current
    assert await backend.complete([completion(second, "fresh")], T0 + 3) == [True]


async def test_a_finished_job_refuses_every_further_transition(
    backend: Backend, queue_name: str
) -> None:
    claimed, _ = await active_job(backend, queue_name)
    lease = lease_of(claimed)
    await backend.dead_letter(lease, reason="unrecoverable", error=None, now_ms=T0 + 1)
    dead = await record(backend, queue_name, "j1")

    with pytest.raises(LeaseLost):
        await backend.retry(lease, run_at_ms=T0, error=attempt_error(1), now_ms=T0 + 2)
    assert await backend.complete([completion(claimed)], T0 + 2) == [False]
    [status] = await backend.extend([lease], lease_ms=LEASE_MS, now_ms=T0 + 2)
    assert not status.held

    after = await record(backend, queue_name, "j1")
    assert after == dead
    assert after.state is JobState.DEAD


async def test_a_lease_of_a_cancelled_then_released_job_is_void(
    backend: Backend, queue_name: str
) -> None:
    claimed, _ = await active_job(backend, queue_name)
    assert await backend.release([lease_of(claimed)], now_ms=T0 + 1) == [True]
    assert await backend.cancel(queue_name, "j1", now_ms=T0 + 2) is JobState.CANCELLED

    [status] = await backend.extend([lease_of(claimed)], lease_ms=LEASE_MS, now_ms=T0 + 3)

    assert not status.held
    assert await backend.complete([completion(claimed)], T0 + 3) == [False]
    assert (await record(backend, queue_name, "j1")).state is JobState.CANCELLED


async def test_a_heartbeat_for_several_leases_answers_each_in_order(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "a"), new_job(queue_name, "b"))
    a = await claim_one(backend, queue_name)
    b = await claim_one(backend, queue_name)
    await backend.cancel(queue_name, "b", now_ms=T0 + 1)

    statuses = await backend.extend(
        [lease_of(a), forged(a), lease_of(b)], lease_ms=LEASE_MS, now_ms=T0 + 2
    )

    assert [(s.job_id, s.held, s.cancel_requested) for s in statuses] == [
        ("a", True, False),
        ("a", False, False),
        ("b", True, True),
    ]
    assert await backend.extend([], lease_ms=LEASE_MS, now_ms=T0 + 3) == []


async def test_progress_after_the_job_finished_raises_lease_lost(
    backend: Backend, queue_name: str
) -> None:
    claimed, _ = await active_job(backend, queue_name)
    await backend.complete([completion(claimed, "ok")], T0 + 1)

    with pytest.raises(LeaseLost):
        await backend.update_progress(lease_of(claimed), b"100")

    assert (await record(backend, queue_name, "j1")).progress is None


async def test_empty_batches_are_answered_with_empty_lists(
    backend: Backend, queue_name: str
) -> None:
    assert await backend.complete([], T0) == []
    assert await backend.release([], now_ms=T0) == []
    assert await backend.extend([], lease_ms=LEASE_MS, now_ms=T0) == []
    assert await backend.enqueue([], T0) == []
    assert await backend.redrive(queue_name, [], now_ms=T0) == []
