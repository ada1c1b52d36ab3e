"""Adding a job id that already exists enqueues once and reports the existing job."""

from __future__ import annotations

from shigoto.backends import Backend
from shigoto.job import JobState

from .support import T0, claim_one, completion, enqueue, new_job, record


async def test_enqueueing_an_existing_id_returns_created_false_and_keeps_the_first_payload(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "welcome:1", data={"v": 1}, priority=1))

    [again] = await backend.enqueue(
        [new_job(queue_name, "welcome:1", data={"v": 2}, priority=9, now=T0 + 5)], T0 + 5
    )

    assert (again.id, again.created, again.state) == ("welcome:1", False, JobState.WAITING)
    stored = await record(backend, queue_name, "welcome:1")
    assert stored.data == {"v": 1}
    assert stored.priority == 1
    assert stored.created_ms == T0
    assert (await backend.counts(queue_name))[JobState.WAITING] == 1


async def test_a_duplicate_reports_the_state_the_existing_job_is_in(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "a"), new_job(queue_name, "b"))
    active = await claim_one(backend, queue_name)
    done = await claim_one(backend, queue_name)
    await backend.complete([completion(done, "ok")], T0 + 1)

    results = await backend.enqueue([new_job(queue_name, "a"), new_job(queue_name, "b")], T0 + 2)

    assert [(r.id, r.created, r.state) for r in results] == [
        ("a", False, JobState.ACTIVE),
        ("b", False, JobState.COMPLETED),
    ]
    assert (await record(backend, queue_name, active.record.id)).attempts == 1
    assert (await record(backend, queue_name, "b")).result_value == "ok"


async def test_a_duplicate_of_a_delayed_job_does_not_change_its_run_time(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "later", delay_ms=10_000))

    [again] = await backend.enqueue([new_job(queue_name, "later")], T0)

    assert (again.created, again.state) == (False, JobState.DELAYED)
    assert (await record(backend, queue_name, "later")).ready_ms == T0 + 10_000


async def test_the_same_id_twice_in_one_batch_is_stored_once(
    backend: Backend, queue_name: str
) -> None:
    results = await backend.enqueue(
        [
            new_job(queue_name, "x", data={"first": True}),
            new_job(queue_name, "y"),
            new_job(queue_name, "x", data={"first": False}),
        ],
        T0,
    )

    assert [(r.id, r.created) for r in results] == [("x", True), ("y", True), ("x", False)]
    assert (await record(backend, queue_name, "x")).data == {"first": True}
    assert (await backend.counts(queue_name))[JobState.WAITING] == 2


async def test_the_same_id_in_two_queues_is_two_jobs(backend: Backend, queue_name: str) -> None:
    other = f"{queue_name}-other"
    results = await backend.enqueue(
        [new_job(queue_name, "same", data={"q": 1}), new_job(other, "same", data={"q": 2})], T0
    )

    assert [r.created for r in results] == [True, True]
    assert (await record(backend, queue_name, "same")).data == {"q": 1}
    assert (await record(backend, other, "same")).data == {"q": 2}


async def test_a_batch_enqueue_reports_one_result_per_job_in_order(
    backend: Backend, queue_name: str
) -> None:
    jobs = [new_job(queue_name, f"j{i:03d}", delay_ms=1_000 * (i % 2)) for i in range(50)]

    results = await backend.enqueue(jobs, T0)

    assert [r.id for r in results] == [j.id for j in jobs]
    assert all(r.created for r in results)
    assert [r.state for r in results] == [
        JobState.DELAYED if i % 2 else JobState.WAITING for i in range(50)
    ]
