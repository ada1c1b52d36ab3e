"""The dead-letter section of the contract: listing with filters and a keyset cursor,
purging, and redrive's history note and staggered due time."""

from __future__ import annotations

import pytest

from shigoto.backends import Backend
from shigoto.backends.contract import DeadFilter, DeadLetter
from shigoto.job import AttemptError, JobState

from .support import T0, attempt_error, claim_one, enqueue, lease_of, new_job, record


@pytest.fixture(autouse=True)
def _needs_dead_letter_section(backend: Backend) -> None:
    if not hasattr(backend, "list_dead"):
        pytest.skip(
            f"dead-letter section (list_dead, purge_dead) not implemented on "
            f"{backend.capabilities.name} yet"
        )


async def kill(
    backend: Backend,
    queue: str,
    job_id: str,
    *,
    at: int,
    name: str = "task",
    reason: str = "retries_exhausted",
    error_type: str = "ValueError",
    message: str = "boom",
) -> None:
    """Enqueue ``job_id`` and make it die at ``at`` with one recorded error."""
    await enqueue(backend, new_job(queue, job_id, name=name, now=at - 10), now=at - 10)
    claimed = await claim_one(backend, queue, now=at - 5)
    await backend.dead_letter(
        lease_of(claimed),
        reason=reason,
        error=attempt_error(error_type=error_type, message=message, at=at),
        now_ms=at,
    )


async def listed(backend: Backend, queue: str, where: DeadFilter | None = None) -> list[str]:
    page = await backend.list_dead(queue, where or DeadFilter(), limit=1000)
    assert page.cursor is None
    return [item.id for item in page.items]


async def test_dead_jobs_are_listed_newest_death_first_with_their_last_error(
    backend: Backend, queue_name: str
) -> None:
    await kill(backend, queue_name, "old", at=T0 + 1_000, message="first")
    await kill(backend, queue_name, "new", at=T0 + 2_000, message="second", name="mail")
    await enqueue(backend, new_job(queue_name, "alive"))

    page = await backend.list_dead(queue_name, DeadFilter())

    assert [item.id for item in page.items] == ["new", "old"]
    assert page.cursor is None
    newest = page.items[0]
    assert isinstance(newest, DeadLetter)
    assert (newest.queue, newest.name, newest.reason) == (queue_name, "mail", "retries_exhausted")
    assert newest.attempts == 1
    assert newest.finished_ms == T0 + 2_000
    assert newest.created_ms == T0 + 1_990
    assert newest.last_error is not None
    assert (newest.last_error.error_type, newest.last_error.message) == ("ValueError", "second")


async def test_the_last_error_is_the_final_one_when_a_job_failed_several_times(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j", attempts=2))
    first = await claim_one(backend, queue_name)
    await backend.retry(
        lease_of(first), run_at_ms=T0, error=attempt_error(1, message="one"), now_ms=T0
    )
    second = await claim_one(backend, queue_name, now=T0 + 1)
    await backend.dead_letter(
        lease_of(second),
        reason="retries_exhausted",
        error=attempt_error(2, message="two", error_type="KeyError"),
        now_ms=T0 + 2,
    )

    [item] = (await backend.list_dead(queue_name, DeadFilter())).items

    assert item.attempts == 2
    assert item.last_error is not None
    assert (item.last_error.attempt, item.last_error.message) == (2, "two")
    assert len((await record(backend, queue_name, "j")).errors) == 2


async def test_filters_by_name_reason_error_type_and_time_combine(
    backend: Backend, queue_name: str
) -> None:
    await kill(backend, queue_name, "a", at=T0 + 1_000, name="mail", error_type="ValueError")
    await kill(
        backend,
        queue_name,
        "b",
        at=T0 + 2_000,
        name="mail",
        reason="unrecoverable",
        error_type="myapp.errors.BusinessError",
    )
    await kill(backend, queue_name, "c", at=T0 + 3_000, name="report", reason="timeout")

    assert await listed(backend, queue_name, DeadFilter(names=("mail",))) == ["b", "a"]
    assert await listed(backend, queue_name, DeadFilter(names=("mail", "report"))) == [
        "c",
        "b",
        "a",
    ]
    assert await listed(backend, queue_name, DeadFilter(reasons=("unrecoverable", "timeout"))) == [
        "c",
        "b",
    ]
    # the stored type, or its last dotted part
    by_type = DeadFilter(error_types=("BusinessError",))
    assert await listed(backend, queue_name, by_type) == ["b"]
    full_type = DeadFilter(error_types=("myapp.errors.BusinessError",))
    assert await listed(backend, queue_name, full_type) == ["b"]
    assert await listed(backend, queue_name, DeadFilter(error_types=("Error",))) == []
    # since is inclusive, until exclusive
    window = DeadFilter(since_ms=T0 + 2_000, until_ms=T0 + 3_000)
    assert await listed(backend, queue_name, window) == ["b"]
    assert (
        await listed(backend, queue_name, DeadFilter(names=("mail",), reasons=("timeout",))) == []
    )


async def test_the_cursor_pages_through_everything_once_even_as_jobs_die_and_go(
    backend: Backend, queue_name: str
) -> None:
    for n in range(7):
        await kill(backend, queue_name, f"j{n}", at=T0 + 1_000 * (n + 1))

    first = await backend.list_dead(queue_name, DeadFilter(), limit=3)
    assert [item.id for item in first.items] == ["j6", "j5", "j4"]
    assert first.cursor is not None
    # meanwhile a newer job dies and one not yet listed is purged
    await kill(backend, queue_name, "late", at=T0 + 100_000)
    await backend.purge_dead(queue_name, ["j2"])

    seen = [item.id for item in first.items]
    cursor: str | None = first.cursor
    while cursor is not None:
        page = await backend.list_dead(queue_name, DeadFilter(), cursor=cursor, limit=3)
        seen += [item.id for item in page.items]
        cursor = page.cursor

    assert seen == ["j6", "j5", "j4", "j3", "j1", "j0"]


async def test_dead_jobs_of_other_queues_are_not_listed(backend: Backend, queue_name: str) -> None:
    await kill(backend, queue_name, "mine", at=T0 + 1)
    await kill(backend, f"{queue_name}-other", "theirs", at=T0 + 2)

    assert await listed(backend, queue_name) == ["mine"]


async def test_purge_deletes_only_dead_jobs(backend: Backend, queue_name: str) -> None:
    await kill(backend, queue_name, "dead", at=T0 + 100)
    await enqueue(backend, new_job(queue_name, "waiting"))

    deleted = await backend.purge_dead(queue_name, ["waiting", "dead", "missing"])

    assert deleted == ["dead"]
    assert await backend.get(queue_name, "dead") is None
    assert (await record(backend, queue_name, "waiting")).state is JobState.WAITING
    assert await backend.purge_dead(queue_name, []) == []


async def test_redrive_appends_the_note_and_keeps_the_old_errors(
    backend: Backend, queue_name: str
) -> None:
    await kill(backend, queue_name, "j", at=T0 + 100, message="first life")
    note = AttemptError(
        attempt=0,
        error_type="Redriven",
        message="redriven by alice@host (all)",
        traceback="",
        worker_id="alice@host",
        started_ms=None,
        ended_ms=T0 + 200,
    )

    assert await backend.redrive(queue_name, ["j"], now_ms=T0 + 200, note=note) == ["j"]

    job = await record(backend, queue_name, "j")
    assert job.state is JobState.WAITING
    assert job.attempts == 0
    assert [e.message for e in job.errors] == ["first life", "redriven by alice@host (all)"]
    assert job.errors[-1].worker_id == "alice@host"


async def test_redrive_at_a_later_time_makes_the_job_delayed_until_then(
    backend: Backend, queue_name: str
) -> None:
    await kill(backend, queue_name, "soon", at=T0 + 100)
    await kill(backend, queue_name, "later", at=T0 + 101)

    await backend.redrive(queue_name, ["soon"], now_ms=T0 + 200, run_at_ms=T0 + 200)
    await backend.redrive(queue_name, ["later"], now_ms=T0 + 200, run_at_ms=T0 + 5_200)

    assert (await record(backend, queue_name, "soon")).state is JobState.WAITING
    later = await record(backend, queue_name, "later")
    assert (later.state, later.ready_ms) == (JobState.DELAYED, T0 + 5_200)
    assert (await claim_one(backend, queue_name, now=T0 + 300)).record.id == "soon"
    assert (
        await backend.claim(queue_name, limit=5, worker_id="w", lease_ms=1_000, now_ms=T0 + 5_000)
        == []
    )
    assert (await claim_one(backend, queue_name, now=T0 + 5_200)).record.id == "later"
    assert (await backend.list_dead(queue_name, DeadFilter())).items == []
