"""The idempotency section of the contract: dedup keys honoured by enqueue, and
once-records (claim, mark, release) with TTLs, scoped per queue."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from shigoto.backends import Backend, open_backend
from shigoto.backends.contract import NewJob
from shigoto.job import JobState, Retention

from .support import T0, attempt_error, claim_one, completion, lease_of, new_job, record


@pytest.fixture(autouse=True)
def _needs_idempotency_section(backend: Backend) -> None:
    if not hasattr(backend, "once_claim"):
        pytest.skip(
            f"idempotency section (dedup keys, once_claim/once_mark/once_release) not "
            f"implemented on {backend.capabilities.name} yet"
        )


def keyed(queue: str, job_id: str, key: str = "welcome:1", *, now: int = T0, **kw: int) -> NewJob:
    job = new_job(queue, job_id, now=now)
    return msgspec.structs.replace(job, dedup_key=key, **kw)


# -- dedup keys -----------------------------------------------------------------------


async def test_a_live_job_holds_its_dedup_key(backend: Backend, queue_name: str) -> None:
    [first] = await backend.enqueue([keyed(queue_name, "a")], T0)
    [second] = await backend.enqueue([keyed(queue_name, "b", now=T0 + 5)], T0 + 5)

    assert (first.id, first.created) == ("a", True)
    assert (second.id, second.created, second.state) == ("a", False, JobState.WAITING)
    assert await backend.get(queue_name, "b") is None
    # still held while it runs
    await claim_one(backend, queue_name, now=T0 + 6)
    [third] = await backend.enqueue([keyed(queue_name, "c", now=T0 + 7)], T0 + 7)
    assert (third.id, third.state) == ("a", JobState.ACTIVE)


async def test_without_a_ttl_the_key_is_free_again_once_the_job_finished(
    backend: Backend, queue_name: str
) -> None:
    await backend.enqueue([keyed(queue_name, "a")], T0)
    claimed = await claim_one(backend, queue_name)
    await backend.complete([completion(claimed)], T0 + 1)

    [again] = await backend.enqueue([keyed(queue_name, "b", now=T0 + 2)], T0 + 2)

    assert (again.id, again.created) == ("b", True)


async def test_a_ttl_holds_the_key_after_the_job_finished_until_it_passes(
    backend: Backend, queue_name: str
) -> None:
    await backend.enqueue([keyed(queue_name, "a", dedup_ttl_ms=10_000)], T0)
    claimed = await claim_one(backend, queue_name)
    await backend.dead_letter(
        lease_of(claimed), reason="unrecoverable", error=attempt_error(), now_ms=T0 + 1
    )

    [held] = await backend.enqueue([keyed(queue_name, "b", now=T0 + 9_999)], T0 + 9_999)
    [free] = await backend.enqueue([keyed(queue_name, "c", now=T0 + 10_000)], T0 + 10_000)

    assert (held.id, held.created, held.state) == ("a", False, JobState.DEAD)
    assert (free.id, free.created) == ("c", True)
    # and now "c" holds it
    [after] = await backend.enqueue([keyed(queue_name, "d", now=T0 + 10_001)], T0 + 10_001)
    assert after.id == "c"


async def test_a_ttl_holder_removed_by_retention_still_holds_the_key(
    backend: Backend, queue_name: str
) -> None:
    job = msgspec.structs.replace(
        new_job(queue_name, "a", remove_on_complete=Retention(count=0)),
        dedup_key="k",
        dedup_ttl_ms=60_000,
    )
    await backend.enqueue([job], T0)
    await backend.complete([completion(await claim_one(backend, queue_name))], T0 + 1)
    assert await backend.get(queue_name, "a") is None

    [held] = await backend.enqueue([keyed(queue_name, "b", "k", now=T0 + 2)], T0 + 2)

    assert (held.id, held.created, held.state) == ("a", False, JobState.COMPLETED)


async def test_dedup_keys_are_per_queue_and_distinct_from_job_ids(
    backend: Backend, queue_name: str
) -> None:
    other = f"{queue_name}-other"
    await backend.enqueue([keyed(queue_name, "a", "k")], T0)

    [elsewhere] = await backend.enqueue([keyed(other, "a", "k")], T0)
    [unkeyed] = await backend.enqueue([new_job(queue_name, "k")], T0)  # an id equal to the key

    assert elsewhere.created and unkeyed.created


async def test_one_batch_with_the_same_key_twice_stores_one_job(
    backend: Backend, queue_name: str
) -> None:
    results = await backend.enqueue(
        [keyed(queue_name, "a"), keyed(queue_name, "b"), new_job(queue_name, "c")], T0
    )

    assert [(r.id, r.created) for r in results] == [("a", True), ("a", False), ("c", True)]
    assert (await backend.counts(queue_name))[JobState.WAITING] == 2


async def test_an_existing_job_id_wins_and_does_not_take_the_key(
    backend: Backend, queue_name: str
) -> None:
    await backend.enqueue([new_job(queue_name, "a")], T0)
    [dup] = await backend.enqueue([keyed(queue_name, "a", "k")], T0)
    [fresh] = await backend.enqueue([keyed(queue_name, "b", "k")], T0)

    assert (dup.id, dup.created) == ("a", False)
    assert (fresh.id, fresh.created) == ("b", True)


async def test_concurrent_producers_of_one_key_store_one_job(
    backend_url: str, queue_name: str
) -> None:
    producers = [open_backend(backend_url) for _ in range(10)]
    for producer in producers:
        await producer.connect()
    try:
        results = await asyncio.gather(
            *(
                producers[n % 10].enqueue([keyed(queue_name, f"j{n}", "race")], T0)
                for n in range(50)
            )
        )
    finally:
        for producer in producers:
            await producer.close()

    created = [r for [r] in results if r.created]
    assert len(created) == 1
    assert {r.id for [r] in results} == {created[0].id}


# -- once-records ---------------------------------------------------------------------


async def test_claim_mark_then_everyone_sees_done_with_the_result(
    backend: Backend, queue_name: str
) -> None:
    first = await backend.once_claim(queue_name, "mail:1", owner="j1", lease_ms=1_000, now_ms=T0)
    assert first.status == "claimed"

    held = await backend.once_mark(
        queue_name, "mail:1", owner="j1", result=b'{"id":7}', ttl_ms=None, now_ms=T0 + 1
    )
    later = await backend.once_claim(
        queue_name, "mail:1", owner="j2", lease_ms=1_000, now_ms=T0 + 999_999_999
    )

    assert held is True
    assert (later.status, later.result) == ("done", b'{"id":7}')


async def test_another_owner_is_told_busy_until_the_claim_expires(
    backend: Backend, queue_name: str
) -> None:
    await backend.once_claim(queue_name, "k", owner="j1", lease_ms=1_000, now_ms=T0)

    busy = await backend.once_claim(queue_name, "k", owner="j2", lease_ms=1_000, now_ms=T0 + 999)
    same_owner = await backend.once_claim(
        queue_name, "k", owner="j1", lease_ms=1_000, now_ms=T0 + 999
    )
    assert (busy.status, busy.holder, busy.until_ms) == ("busy", "j1", T0 + 1_000)
    assert same_owner.status == "claimed"  # a retry of the same job takes it back at once

    # j1's renewed claim ends at T0 + 1_999; then j2 may take over
    taken = await backend.once_claim(queue_name, "k", owner="j2", lease_ms=1_000, now_ms=T0 + 2_000)
    assert taken.status == "claimed"
    late_mark = await backend.once_mark(
        queue_name, "k", owner="j1", result=None, ttl_ms=None, now_ms=T0 + 2_001
    )
    assert late_mark is False  # recorded anyway: the effect happened
    assert (
        await backend.once_claim(queue_name, "k", owner="j3", lease_ms=1, now_ms=T0 + 2_002)
    ).status == "done"


async def test_release_lets_the_next_attempt_claim_at_once(
    backend: Backend, queue_name: str
) -> None:
    await backend.once_claim(queue_name, "k", owner="j1", lease_ms=60_000, now_ms=T0)

    assert await backend.once_release(queue_name, "k", owner="j2") is False
    assert await backend.once_release(queue_name, "k", owner="j1") is True
    assert (
        await backend.once_claim(queue_name, "k", owner="j2", lease_ms=60_000, now_ms=T0 + 1)
    ).status == "claimed"


async def test_release_never_undoes_a_done_record(backend: Backend, queue_name: str) -> None:
    await backend.once_claim(queue_name, "k", owner="j1", lease_ms=1_000, now_ms=T0)
    await backend.once_mark(queue_name, "k", owner="j1", result=None, ttl_ms=None, now_ms=T0)

    assert await backend.once_release(queue_name, "k", owner="j1") is False
    done = await backend.once_claim(queue_name, "k", owner="j1", lease_ms=1_000, now_ms=T0 + 1)
    assert (done.status, done.result) == ("done", None)


async def test_a_done_record_is_forgotten_after_its_ttl(backend: Backend, queue_name: str) -> None:
    await backend.once_claim(queue_name, "k", owner="j1", lease_ms=1_000, now_ms=T0)
    await backend.once_mark(queue_name, "k", owner="j1", result=b"1", ttl_ms=5_000, now_ms=T0)

    before = await backend.once_claim(queue_name, "k", owner="j2", lease_ms=1, now_ms=T0 + 4_999)
    after = await backend.once_claim(queue_name, "k", owner="j2", lease_ms=1, now_ms=T0 + 5_000)

    assert before.status == "done"
    assert after.status == "claimed"


async def test_once_records_are_scoped_per_queue(backend: Backend, queue_name: str) -> None:
    await backend.once_claim(queue_name, "k", owner="j1", lease_ms=1_000, now_ms=T0)
    await backend.once_mark(queue_name, "k", owner="j1", result=None, ttl_ms=None, now_ms=T0)

    elsewhere = await backend.once_claim(
        f"{queue_name}-other", "k", owner="j1", lease_ms=1_000, now_ms=T0
    )

    assert elsewhere.status == "claimed"


async def test_a_keyed_job_that_is_retried_still_holds_its_key(
    backend: Backend, queue_name: str
) -> None:
    # dedup bookkeeping must not disturb ordinary transitions of a keyed job
    await backend.enqueue([keyed(queue_name, "a")], T0)
    claimed = await claim_one(backend, queue_name)
    await backend.retry(lease_of(claimed), run_at_ms=T0 + 10, error=attempt_error(), now_ms=T0 + 1)

    job = await record(backend, queue_name, "a")
    [again] = await backend.enqueue([keyed(queue_name, "b", now=T0 + 2)], T0 + 2)

    assert job.state is JobState.DELAYED
    assert (again.id, again.state) == ("a", JobState.DELAYED)
