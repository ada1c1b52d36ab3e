"""Every state transition of the job lifecycle, through the backend contract alone."""

from __future__ import annotations

import msgspec

from shigoto.backends import Backend
from shigoto.job import JobState

from .support import (
    LEASE_MS,
    T0,
    WORKER,
    attempt_error,
    claim,
    claim_one,
    completion,
    enqueue,
    lease_of,
    new_job,
    record,
)


async def test_an_enqueued_job_is_waiting_with_its_data_and_options(
    backend: Backend, queue_name: str
) -> None:
    job = new_job(queue_name, "j1", data={"user_id": 7}, attempts=5, priority=3)
    [done] = await backend.enqueue([job], T0)

    assert (done.id, done.created, done.state) == ("j1", True, JobState.WAITING)
    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.WAITING
    assert stored.name == "task"
    assert stored.data == {"user_id": 7}
    assert stored.options.attempts == 5
    assert stored.priority == 3
    assert (stored.created_ms, stored.ready_ms) == (T0, T0)
    assert (stored.attempts, stored.stalls, stored.errors) == (0, 0, [])
    assert stored.result is None and stored.reason is None


async def test_a_job_enqueued_with_a_future_ready_time_is_delayed(
    backend: Backend, queue_name: str
) -> None:
    [done] = await backend.enqueue([new_job(queue_name, "later", delay_ms=5_000)], T0)

    assert done.state is JobState.DELAYED
    stored = await record(backend, queue_name, "later")
    assert stored.state is JobState.DELAYED
    assert stored.ready_ms == T0 + 5_000


async def test_claiming_makes_a_job_active_with_a_token_a_lease_and_one_more_attempt(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))

    claimed = await claim_one(backend, queue_name, now=T0 + 10)

    assert claimed.token
    assert claimed.record.state is JobState.ACTIVE
    assert claimed.record.attempts == 1
    assert claimed.record.lease_until_ms == T0 + 10 + LEASE_MS
    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.ACTIVE
    assert stored.attempts == 1
    assert stored.worker_id == WORKER
    assert stored.started_ms == T0 + 10
    assert stored.lease_until_ms == T0 + 10 + LEASE_MS


async def test_each_claim_hands_out_a_fresh_token(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    first = await claim_one(backend, queue_name)
    await backend.release([lease_of(first)], now_ms=T0 + 1)

    second = await claim_one(backend, queue_name, now=T0 + 2)

    assert second.token != first.token


async def test_completing_a_job_stores_its_result_and_finish_time(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    assert await backend.complete([completion(claimed, {"sent": True})], T0 + 250) == [True]

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.COMPLETED
    assert stored.result_value == {"sent": True}
    assert stored.finished_ms == T0 + 250
    assert stored.duration_ms == 250
    assert stored.attempts == 1


async def test_a_job_completed_without_a_result_stores_none(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    assert await backend.complete([completion(claimed, None)], T0 + 1) == [True]

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.COMPLETED
    assert stored.result is None


async def test_progress_of_a_running_job_is_stored(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    await backend.update_progress(lease_of(claimed), msgspec.json.encode({"done": 42}))

    assert (await record(backend, queue_name, "j1")).progress_value == {"done": 42}


async def test_a_retried_job_is_delayed_until_its_run_time_with_the_error_appended(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    await backend.retry(
        lease_of(claimed),
        run_at_ms=T0 + 2_000,
        error=attempt_error(1, message="smtp down"),
        now_ms=T0 + 100,
    )

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.DELAYED
    assert stored.ready_ms == T0 + 2_000
    assert stored.attempts == 1
    assert [(e.attempt, e.error_type, e.message) for e in stored.errors] == [
        (1, "ValueError", "smtp down")
    ]
    assert stored.errors[0].worker_id == WORKER
    assert stored.last_error == stored.errors[0]
    assert await claim(backend, queue_name, now=T0 + 1_999) == []
    again = await claim_one(backend, queue_name, now=T0 + 2_000)
    assert again.record.attempts == 2


async def test_a_retry_that_is_already_due_makes_the_job_waiting(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    await backend.retry(
        lease_of(claimed), run_at_ms=T0 + 100, error=attempt_error(1), now_ms=T0 + 100
    )

    assert (await record(backend, queue_name, "j1")).state is JobState.WAITING
    assert [c.record.id for c in await claim(backend, queue_name, now=T0 + 100)] == ["j1"]


async def test_every_failed_attempt_is_kept_in_order(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    now = T0
    for attempt in (1, 2, 3):
        claimed = await claim_one(backend, queue_name, now=now)
        assert claimed.record.attempts == attempt
        await backend.retry(
            lease_of(claimed),
            run_at_ms=now,
            error=attempt_error(attempt, message=f"fail {attempt}"),
            now_ms=now,
        )
        now += 10

    stored = await record(backend, queue_name, "j1")
    assert [e.message for e in stored.errors] == ["fail 1", "fail 2", "fail 3"]


async def test_a_dead_lettered_job_is_dead_with_its_reason_and_final_error(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1", attempts=1))
    claimed = await claim_one(backend, queue_name)

    await backend.dead_letter(
        lease_of(claimed),
        reason="retries_exhausted",
        error=attempt_error(1, message="still down"),
        now_ms=T0 + 300,
    )

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.DEAD
    assert stored.reason == "retries_exhausted"
    assert stored.finished_ms == T0 + 300
    assert [e.message for e in stored.errors] == ["still down"]
    assert await claim(backend, queue_name, now=T0 + 10_000) == []


async def test_a_job_dead_lettered_without_an_error_keeps_its_history(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)
    await backend.retry(lease_of(claimed), run_at_ms=T0, error=attempt_error(1), now_ms=T0)
    claimed = await claim_one(backend, queue_name)

    await backend.dead_letter(lease_of(claimed), reason="no_handler", error=None, now_ms=T0)

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.DEAD
    assert stored.reason == "no_handler"
    assert len(stored.errors) == 1


async def test_a_released_job_is_waiting_again_without_counting_the_attempt(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)
    note = attempt_error(0, error_type="WorkerShutdown", message="worker stopped")

    assert await backend.release([lease_of(claimed)], now_ms=T0 + 5, note=note) == [True]

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.WAITING
    assert stored.attempts == 0
    assert [e.error_type for e in stored.errors] == ["WorkerShutdown"]
    again = await claim_one(backend, queue_name, now=T0 + 6)
    assert again.record.attempts == 1


async def test_a_release_without_a_note_leaves_the_history_untouched(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    assert await backend.release([lease_of(claimed)], now_ms=T0 + 5) == [True]

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.WAITING
    assert stored.errors == []


async def test_a_released_job_runs_before_jobs_enqueued_after_it(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "first"))
    claimed = await claim_one(backend, queue_name)
    await enqueue(backend, new_job(queue_name, "second", now=T0 + 10), now=T0 + 10)

    await backend.release([lease_of(claimed)], now_ms=T0 + 20)

    assert [c.record.id for c in await claim(backend, queue_name, now=T0 + 30)] == [
        "first",
        "second",
    ]


async def test_cancelling_a_waiting_job_makes_it_cancelled_and_unclaimable(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))

    assert await backend.cancel(queue_name, "j1", now_ms=T0 + 1) is JobState.CANCELLED

    assert (await record(backend, queue_name, "j1")).state is JobState.CANCELLED
    assert await claim(backend, queue_name, now=T0 + 2) == []


async def test_cancelling_a_delayed_job_makes_it_cancelled_and_never_due(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1", delay_ms=1_000))

    assert await backend.cancel(queue_name, "j1", now_ms=T0 + 1) is JobState.CANCELLED

    assert await backend.promote_due(queue_name, now_ms=T0 + 5_000, limit=10) == 0
    assert await claim(backend, queue_name, now=T0 + 5_000) == []
    assert (await record(backend, queue_name, "j1")).state is JobState.CANCELLED


async def test_cancelling_an_active_job_flags_it_and_the_next_heartbeat_reports_it(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)
    [before] = await backend.extend([lease_of(claimed)], lease_ms=LEASE_MS, now_ms=T0 + 1)
    assert before.held and not before.cancel_requested

    assert await backend.cancel(queue_name, "j1", now_ms=T0 + 2) is JobState.ACTIVE

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.ACTIVE
    assert stored.cancel_requested
    [status] = await backend.extend([lease_of(claimed)], lease_ms=LEASE_MS, now_ms=T0 + 3)
    assert (status.job_id, status.held, status.cancel_requested) == ("j1", True, True)


async def test_cancelling_a_finished_job_changes_nothing(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)
    await backend.complete([completion(claimed, 1)], T0 + 1)

    assert await backend.cancel(queue_name, "j1", now_ms=T0 + 2) is JobState.COMPLETED

    assert (await record(backend, queue_name, "j1")).result_value == 1


async def test_cancelling_an_unknown_job_returns_none(backend: Backend, queue_name: str) -> None:
    assert await backend.cancel(queue_name, "nope", now_ms=T0) is None


async def test_redriving_a_dead_job_makes_it_waiting_with_attempts_reset_and_errors_kept(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1", attempts=1))
    claimed = await claim_one(backend, queue_name)
    await backend.dead_letter(
        lease_of(claimed), reason="unrecoverable", error=attempt_error(1), now_ms=T0 + 1
    )

    assert await backend.redrive(queue_name, ["j1"], now_ms=T0 + 1_000) == ["j1"]

    stored = await record(backend, queue_name, "j1")
    assert stored.state is JobState.WAITING
    assert (stored.attempts, stored.stalls) == (0, 0)
    assert len(stored.errors) == 1
    again = await claim_one(backend, queue_name, now=T0 + 1_001)
    assert again.record.attempts == 1


async def test_a_redriven_job_does_not_inherit_an_old_cancellation_request(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)
    await backend.cancel(queue_name, "j1", now_ms=T0 + 1)
    await backend.dead_letter(lease_of(claimed), reason="cancelled", error=None, now_ms=T0 + 2)

    assert await backend.redrive(queue_name, ["j1"], now_ms=T0 + 3) == ["j1"]

    again = await claim_one(backend, queue_name, now=T0 + 4)
    assert not again.record.cancel_requested
    [status] = await backend.extend([lease_of(again)], lease_ms=LEASE_MS, now_ms=T0 + 5)
    assert status.held and not status.cancel_requested


async def test_redrive_moves_only_dead_jobs(backend: Backend, queue_name: str) -> None:
    await enqueue(backend, new_job(queue_name, "doomed"), new_job(queue_name, "waiting"))
    doomed = await claim_one(backend, queue_name)
    assert doomed.record.id == "doomed"  # FIFO: the first one
    await backend.dead_letter(lease_of(doomed), reason="unrecoverable", error=None, now_ms=T0)

    moved = await backend.redrive(queue_name, ["waiting", "doomed", "missing"], now_ms=T0 + 1)

    assert moved == ["doomed"]
    assert (await record(backend, queue_name, "doomed")).state is JobState.WAITING
    assert (await record(backend, queue_name, "waiting")).state is JobState.WAITING


async def test_promote_due_moves_due_delayed_jobs_in_due_order(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(
        backend,
        new_job(queue_name, "at-300", delay_ms=300),
        new_job(queue_name, "at-100", delay_ms=100),
        new_job(queue_name, "at-200", delay_ms=200),
        new_job(queue_name, "at-900", delay_ms=900),
    )

    assert await backend.promote_due(queue_name, now_ms=T0 + 99, limit=10) == 0
    assert await backend.promote_due(queue_name, now_ms=T0 + 500, limit=2) == 2
    waiting = await backend.list_jobs(queue_name, JobState.WAITING)
    assert [j.id for j in waiting] == ["at-100", "at-200"]
    assert await backend.promote_due(queue_name, now_ms=T0 + 500, limit=10) == 1
    assert [j.id for j in await backend.list_jobs(queue_name, JobState.WAITING)] == [
        "at-100",
        "at-200",
        "at-300",
    ]
    assert [j.id for j in await backend.list_jobs(queue_name, JobState.DELAYED)] == ["at-900"]
    assert [c.record.id for c in await claim(backend, queue_name, now=T0 + 500)] == [
        "at-100",
        "at-200",
        "at-300",
    ]


async def test_a_job_cancelled_while_running_is_not_retried_but_cancelled(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1", attempts=3))
    claimed = await claim_one(backend, queue_name, now=T0 + 1)
    await backend.cancel(queue_name, "j1", now_ms=T0 + 2)

    await backend.retry(
        lease_of(claimed), run_at_ms=T0 + 1_000, error=attempt_error(1), now_ms=T0 + 3
    )

    stored = await record(backend, queue_name, "j1")
    assert (stored.state, stored.reason) == (JobState.CANCELLED, "cancelled")
    assert await claim(backend, queue_name, now=T0 + 5_000) == []


async def test_a_job_cancelled_while_running_is_not_released_but_cancelled(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name, now=T0 + 1)
    await backend.cancel(queue_name, "j1", now_ms=T0 + 2)

    assert await backend.release([lease_of(claimed)], now_ms=T0 + 3) == [True]

    stored = await record(backend, queue_name, "j1")
    assert (stored.state, stored.reason) == (JobState.CANCELLED, "cancelled")
