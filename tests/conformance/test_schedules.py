"""Schedules: each tick is claimed exactly once, and run-time definitions are stored.

``claim_tick`` is the whole exactly-once guarantee of the scheduler: it must refuse a
tick that is not newer than the last one claimed, even after the tick's job is gone.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shigoto.backends import Backend, open_backend
from shigoto.backends.contract import NewJob
from shigoto.job import REMOVE_ALL, JobState

from .support import T0, claim_one, completion, enqueue, new_job, record

SECOND = 1000


@pytest.fixture
def sched(backend: Backend) -> Backend:
    """The backend, when it implements the contract's schedules section."""
    if not hasattr(backend, "claim_tick"):
        pytest.skip(f"schedules not implemented on {backend.capabilities.name} yet")
    return backend


@pytest.fixture
def name() -> str:
    return f"sched-{uuid.uuid4().hex[:8]}"


def tick_job(queue: str, schedule: str, fire_ms: int, **options: object) -> NewJob:
    return new_job(
        queue, f"cron:{schedule}:{fire_ms}", now=fire_ms, data={"at": fire_ms}, **options
    )


async def test_a_tick_is_claimed_once_and_its_job_enqueued(
    sched: Backend, queue_name: str, name: str
) -> None:
    fire = T0 + SECOND
    job = tick_job(queue_name, name, fire)

    assert await sched.claim_tick(name, fire, job, now_ms=fire + 5) is True
    assert await sched.claim_tick(name, fire, job, now_ms=fire + 6) is False

    stored = await record(sched, queue_name, job.id)
    assert (stored.state, stored.data) == (JobState.WAITING, {"at": fire})
    assert (await sched.counts(queue_name))[JobState.WAITING] == 1


async def test_a_tick_older_than_the_last_claimed_one_is_refused_and_enqueues_nothing(
    sched: Backend, queue_name: str, name: str
) -> None:
    newer, older = T0 + 2 * SECOND, T0 + SECOND
    assert await sched.claim_tick(name, newer, tick_job(queue_name, name, newer), now_ms=newer)

    assert not await sched.claim_tick(name, older, tick_job(queue_name, name, older), now_ms=newer)

    assert await sched.get(queue_name, f"cron:{name}:{older}") is None


async def test_a_tick_stays_claimed_after_its_job_completed_and_was_removed(
    sched: Backend, queue_name: str, name: str
) -> None:
    """Dedup by job id alone would fire this tick twice: the job is gone."""
    fire = T0 + SECOND
    job = tick_job(queue_name, name, fire, remove_on_complete=REMOVE_ALL)
    assert await sched.claim_tick(name, fire, job, now_ms=fire)
    claimed = await claim_one(sched, queue_name, now=fire + 1)
    assert await sched.complete([completion(claimed)], fire + 2) == [True]
    assert await sched.get(queue_name, job.id) is None

    assert not await sched.claim_tick(name, fire, job, now_ms=fire + 60 * SECOND)
    assert await sched.get(queue_name, job.id) is None


async def test_concurrent_schedulers_claim_each_tick_exactly_once(
    sched: Backend, backend_url: str, queue_name: str, name: str
) -> None:
    others = [open_backend(backend_url) for _ in range(3)]
    for other in others:
        await other.connect()
    try:
        contenders = [sched, *others]
        wins = 0
        for step in range(1, 11):
            fire = T0 + step * SECOND
            results = await asyncio.gather(
                *(
                    b.claim_tick(name, fire, tick_job(queue_name, name, fire), now_ms=fire)
                    for b in contenders
                )
            )
            assert sum(results) == 1, (step, results)
            wins += sum(results)
    finally:
        for other in others:
            await other.close()
    assert wins == 10
    assert (await sched.counts(queue_name))[JobState.WAITING] == 10


async def test_registration_records_when_a_schedule_was_first_seen(
    sched: Backend, name: str
) -> None:
    await sched.register_schedules([name], now_ms=T0)
    await sched.register_schedules([name], now_ms=T0 + 5 * SECOND)  # a later scheduler

    [state] = [s for s in await sched.schedule_states() if s.name == name]
    assert (state.since_ms, state.last_fire_ms, state.definition) == (T0, None, None)


async def test_states_report_the_last_claimed_tick_and_its_job(
    sched: Backend, queue_name: str, name: str
) -> None:
    fire = T0 + SECOND
    await sched.claim_tick(name, fire, tick_job(queue_name, name, fire), now_ms=fire + 250)

    [state] = [s for s in await sched.schedule_states() if s.name == name]
    assert state.since_ms == fire + 250  # an unregistered name is registered by its claim
    assert (state.last_fire_ms, state.last_queue, state.last_job_id, state.last_claimed_ms) == (
        fire,
        queue_name,
        f"cron:{name}:{fire}",
        fire + 250,
    )


async def test_a_tick_whose_job_id_already_exists_is_claimed_and_keeps_that_job(
    sched: Backend, queue_name: str, name: str
) -> None:
    fire = T0 + SECOND
    await enqueue(sched, new_job(queue_name, f"cron:{name}:{fire}", data={"by": "hand"}))

    assert await sched.claim_tick(name, fire, tick_job(queue_name, name, fire), now_ms=fire)

    assert (await record(sched, queue_name, f"cron:{name}:{fire}")).data == {"by": "hand"}


async def test_a_paused_queue_still_receives_tick_jobs(
    sched: Backend, queue_name: str, name: str
) -> None:
    await sched.set_paused(queue_name, True)
    fire = T0 + SECOND
    assert await sched.claim_tick(name, fire, tick_job(queue_name, name, fire), now_ms=fire)
    assert (await sched.counts(queue_name))[JobState.WAITING] == 1


async def test_definitions_are_stored_opaquely_and_replacing_one_keeps_the_tick_state(
    sched: Backend, queue_name: str, name: str
) -> None:
    await sched.save_schedule(name, b'{"v":1}', now_ms=T0)
    fire = T0 + SECOND
    await sched.claim_tick(name, fire, tick_job(queue_name, name, fire), now_ms=fire)

    await sched.save_schedule(name, b'{"v":2}', now_ms=T0 + 2 * SECOND)

    [state] = [s for s in await sched.schedule_states() if s.name == name]
    assert (state.definition, state.since_ms, state.last_fire_ms) == (b'{"v":2}', T0, fire)
    assert not await sched.claim_tick(name, fire, tick_job(queue_name, name, fire), now_ms=fire)


async def test_deleting_a_schedule_forgets_it(sched: Backend, name: str) -> None:
    await sched.save_schedule(name, b"{}", now_ms=T0)

    assert await sched.delete_schedule(name) is True
    assert await sched.delete_schedule(name) is False
    assert name not in {s.name for s in await sched.schedule_states()}


async def test_states_are_sorted_by_name_and_bounded(sched: Backend) -> None:
    names = [f"s-{uuid.uuid4().hex[:6]}-{i}" for i in range(5)]
    await sched.register_schedules(names, now_ms=T0)

    listed = [s.name for s in await sched.schedule_states()]
    assert [n for n in listed if n in names] == sorted(names)
    assert len(await sched.schedule_states(limit=2)) == 2
