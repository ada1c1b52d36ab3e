"""Rate limits, concurrency caps and postponement, enforced inside the claim.

Time is arithmetic: every claim passes ``now``, so windows are exact to the millisecond
(a window is ``(now - period, now]``). Limits are queue settings in the backend, so a
second connection (another worker process) sees and obeys the same ones.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from shigoto.backends import Backend, open_backend
from shigoto.backends.contract import LimitOutlook, NewJob, QueueLimits
from shigoto.errors import LeaseLost
from shigoto.job import JobState

from .support import (
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


@pytest.fixture(autouse=True)
def _needs_rate_limits(backend: Backend) -> None:
    if not backend.capabilities.rate_limits:
        pytest.skip(f"{backend.capabilities.name} declares no rate limits (Capabilities)")


async def fill(backend: Backend, queue: str, n: int, prefix: str = "j") -> None:
    await enqueue(backend, *(new_job(queue, f"{prefix}{i:03d}") for i in range(n)))


# -- settings ---------------------------------------------------------------------------


async def test_limits_are_stored_per_queue_and_can_be_cleared(
    backend: Backend, queue_name: str
) -> None:
    assert await backend.get_limits(queue_name, now_ms=T0) == QueueLimits()
    limits = QueueLimits(rate_max=100, rate_period_ms=1000, max_active=5)

    await backend.set_limits(queue_name, limits)

    assert await backend.get_limits(queue_name, now_ms=T0) == limits
    assert await backend.get_limits(f"{queue_name}-other", now_ms=T0) == QueueLimits()
    await backend.set_limits(queue_name, QueueLimits())
    assert await backend.get_limits(queue_name, now_ms=T0) == QueueLimits()


async def test_a_second_connection_sees_and_obeys_the_same_limits(
    backend: Backend, backend_url: str, queue_name: str
) -> None:
    await fill(backend, queue_name, 10)
    await backend.set_limits(queue_name, QueueLimits(max_active=3))
    other = open_backend(backend_url)
    await other.connect()
    try:
        assert (await other.get_limits(queue_name, now_ms=T0)).max_active == 3
        assert len(await claim(backend, queue_name, limit=2)) == 2
        assert len(await claim(other, queue_name, limit=10, worker_id="worker-b")) == 1
        assert await claim(other, queue_name, limit=10, worker_id="worker-b") == []
    finally:
        await other.close()


# -- max_active -------------------------------------------------------------------------


async def test_max_active_caps_active_jobs_across_workers_and_frees_a_slot_per_finish(
    backend: Backend, queue_name: str
) -> None:
    await fill(backend, queue_name, 10)
    await backend.set_limits(queue_name, QueueLimits(max_active=3))

    first = await claim(backend, queue_name, limit=2, worker_id="a")
    second = await claim(backend, queue_name, limit=10, worker_id="b")
    assert (len(first), len(second)) == (2, 1)
    assert await claim(backend, queue_name, limit=10, worker_id="c") == []

    await backend.complete([completion(first[0])], T0 + 1)
    await backend.retry(
        lease_of(first[1]),
        run_at_ms=T0 + 60_000,
        error=attempt_error(),
        now_ms=T0 + 1,
    )
    assert len(await claim(backend, queue_name, limit=10, worker_id="c", now=T0 + 2)) == 2
    assert (await backend.counts(queue_name))[JobState.ACTIVE] == 3


async def test_lowering_max_active_below_the_running_jobs_claims_nothing_until_below(
    backend: Backend, queue_name: str
) -> None:
    await fill(backend, queue_name, 6)
    running = await claim(backend, queue_name, limit=4)
    await backend.set_limits(queue_name, QueueLimits(max_active=2))

    assert await claim(backend, queue_name) == []
    await backend.complete([completion(c) for c in running[:3]], T0 + 1)
    assert len(await claim(backend, queue_name, now=T0 + 2)) == 1


# -- rate -------------------------------------------------------------------------------


async def test_a_rate_limit_allows_n_claims_per_sliding_window(
    backend: Backend, queue_name: str
) -> None:
    await fill(backend, queue_name, 20)
    await backend.set_limits(queue_name, QueueLimits(rate_max=3, rate_period_ms=1000))

    assert len(await claim(backend, queue_name, limit=2, now=T0)) == 2
    assert len(await claim(backend, queue_name, limit=10, now=T0 + 400)) == 1
    assert await claim(backend, queue_name, now=T0 + 999) == []
    # (T0 + 1000 - 1000, T0 + 1000] no longer holds the two claims made at T0
    assert len(await claim(backend, queue_name, now=T0 + 1000)) == 2
    assert await claim(backend, queue_name, now=T0 + 1399) == []
    assert len(await claim(backend, queue_name, now=T0 + 1400)) == 1


async def test_claims_of_many_workers_share_one_window(backend: Backend, queue_name: str) -> None:
    await fill(backend, queue_name, 50)
    await backend.set_limits(queue_name, QueueLimits(rate_max=10, rate_period_ms=1000))

    claimed = await asyncio.gather(
        *(claim(backend, queue_name, limit=4, worker_id=f"w{i}") for i in range(6))
    )

    assert sum(len(batch) for batch in claimed) == 10
    ids = [c.record.id for batch in claimed for c in batch]
    assert len(set(ids)) == 10


async def test_rate_and_max_active_together_the_tighter_wins(
    backend: Backend, queue_name: str
) -> None:
    await fill(backend, queue_name, 20)
    await backend.set_limits(queue_name, QueueLimits(rate_max=5, rate_period_ms=1000, max_active=2))

    batch = await claim(backend, queue_name, limit=10)
    assert len(batch) == 2
    await backend.complete([completion(c) for c in batch], T0 + 1)
    assert len(await claim(backend, queue_name, limit=10, now=T0 + 2)) == 2
    await backend.complete([completion(c) for c in batch], T0 + 3)
    assert (await backend.counts(queue_name))[JobState.ACTIVE] == 2


async def test_changing_the_limits_keeps_the_window(backend: Backend, queue_name: str) -> None:
    await fill(backend, queue_name, 20)
    await backend.set_limits(queue_name, QueueLimits(rate_max=4, rate_period_ms=1000))
    assert len(await claim(backend, queue_name, limit=10)) == 4

    await backend.set_limits(queue_name, QueueLimits(rate_max=6, rate_period_ms=1000))

    assert len(await claim(backend, queue_name, limit=10, now=T0 + 10)) == 2
    await backend.set_limits(queue_name, QueueLimits())
    assert len(await claim(backend, queue_name, limit=10, now=T0 + 20)) == 10


async def test_a_limited_claim_promotes_due_jobs_and_leaves_the_rest_waiting(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, *(new_job(queue_name, f"d{i}", delay_ms=100) for i in range(5)))
    await backend.set_limits(queue_name, QueueLimits(rate_max=2, rate_period_ms=1000))

    assert len(await claim(backend, queue_name, now=T0 + 100)) == 2

    counts = await backend.counts(queue_name)
    assert (counts[JobState.WAITING], counts[JobState.DELAYED]) == (3, 0)


async def test_an_idle_worker_sleeps_until_the_next_slot_instead_of_spinning(
    backend: Backend, queue_name: str
) -> None:
    await fill(backend, queue_name, 5)
    await backend.set_limits(queue_name, QueueLimits(rate_max=1, rate_period_ms=400))
    now = int(time.time() * 1000)
    assert len(await claim(backend, queue_name, now=now)) == 1
    assert await claim(backend, queue_name, now=now + 1) == []

    started = time.monotonic()
    await backend.wait_for_work([queue_name], timeout_s=5)
    waited = time.monotonic() - started

    assert 0.25 <= waited <= 1.0, waited


async def test_a_claim_that_uses_up_the_rate_also_sends_idle_workers_to_sleep(
    backend: Backend, queue_name: str
) -> None:
    await fill(backend, queue_name, 5)
    await backend.set_limits(queue_name, QueueLimits(rate_max=2, rate_period_ms=400))
    now = int(time.time() * 1000)
    assert len(await claim(backend, queue_name, now=now)) == 2  # all it may take

    started = time.monotonic()
    await backend.wait_for_work([queue_name], timeout_s=5)

    assert 0.25 <= time.monotonic() - started <= 1.0


async def test_a_job_finishing_here_wakes_a_wait_held_by_max_active_at_once(
    backend: Backend, queue_name: str
) -> None:
    await fill(backend, queue_name, 3)
    await backend.set_limits(queue_name, QueueLimits(max_active=1))
    [running] = await claim(backend, queue_name, now=int(time.time() * 1000))
    assert await claim(backend, queue_name, now=int(time.time() * 1000)) == []

    started = time.monotonic()
    waiting = asyncio.create_task(backend.wait_for_work([queue_name], timeout_s=5))
    await asyncio.sleep(0.005)
    assert not waiting.done()  # held: it waits (at most CONCURRENCY_POLL_MS = 50 ms)
    await backend.complete([completion(running)], int(time.time() * 1000))
    await asyncio.wait_for(waiting, 2)

    assert time.monotonic() - started < 0.045  # woken by the finish, before the poll
    assert len(await claim(backend, queue_name, now=int(time.time() * 1000))) == 1


async def test_its_outlook_names_a_held_queue_until_its_next_slot(
    backend: Backend, queue_name: str
) -> None:
    """What a backend composed over this one (amqp://…?store=) waits by."""
    if not isinstance(backend, LimitOutlook):
        pytest.skip(f"{backend.capabilities.name} has no LimitOutlook (optional)")
    other = f"{queue_name}-open"
    await fill(backend, queue_name, 3)
    await backend.set_limits(queue_name, QueueLimits(rate_max=1, rate_period_ms=300))
    now = int(time.time() * 1000)
    assert backend.outlook([queue_name, other]) == ([], None)
    assert len(await claim(backend, queue_name, now=now)) == 1

    held, _ = backend.outlook([queue_name, other])

    assert held == [queue_name]
    await asyncio.sleep(0.35)
    assert backend.outlook([queue_name, other])[0] == []


# -- postpone (RateLimited) ---------------------------------------------------------------


async def test_postpone_delays_the_job_without_counting_the_attempt(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"), new_job(queue_name, "j2"))
    claimed = await claim_one(backend, queue_name)
    assert claimed.record.attempts == 1

    await backend.postpone(lease_of(claimed), run_at_ms=T0 + 5000, hold=False, now_ms=T0 + 10)

    job = await record(backend, queue_name, claimed.record.id)
    assert (job.state, job.attempts, job.ready_ms) == (JobState.DELAYED, 0, T0 + 5000)
    assert job.errors == []
    # without hold the other job is claimed at once
    assert [c.record.id for c in await claim(backend, queue_name, now=T0 + 20)] == ["j2"]
    again = await claim_one(backend, queue_name, now=T0 + 5000)
    assert (again.record.id, again.record.attempts) == ("j1", 1)


async def test_postpone_with_hold_holds_the_whole_queue_until_then(
    backend: Backend, queue_name: str
) -> None:
    await fill(backend, queue_name, 3)
    claimed = await claim_one(backend, queue_name)

    await backend.postpone(lease_of(claimed), run_at_ms=T0 + 3000, hold=True, now_ms=T0 + 1)

    assert await claim(backend, queue_name, now=T0 + 2999) == []
    assert (await backend.get_limits(queue_name, now_ms=T0 + 2999)).held_until_ms == T0 + 3000
    assert len(await claim(backend, queue_name, now=T0 + 3000)) == 3
    assert (await backend.get_limits(queue_name, now_ms=T0 + 3000)).held_until_ms is None


async def test_postpone_with_a_stale_token_raises_lease_lost(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)
    await backend.complete([completion(claimed)], T0 + 1)

    with pytest.raises(LeaseLost):
        await backend.postpone(lease_of(claimed), run_at_ms=T0 + 10, hold=True, now_ms=T0 + 2)
    assert (await backend.get_limits(queue_name, now_ms=T0 + 2)).held_until_ms is None


async def test_postponing_a_job_whose_cancellation_was_requested_cancels_it(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)
    await backend.cancel(queue_name, "j1", now_ms=T0 + 1)

    await backend.postpone(lease_of(claimed), run_at_ms=T0 + 10, hold=False, now_ms=T0 + 2)

    assert (await record(backend, queue_name, "j1")).state == JobState.CANCELLED


async def test_postpone_to_a_time_already_due_makes_the_job_waiting(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "j1"))
    claimed = await claim_one(backend, queue_name)

    await backend.postpone(lease_of(claimed), run_at_ms=T0 + 5, hold=True, now_ms=T0 + 5)

    assert (await record(backend, queue_name, "j1")).state == JobState.WAITING
    assert (await claim_one(backend, queue_name, now=T0 + 6)).record.attempts == 1


# -- groups -----------------------------------------------------------------------------


def grouped(queue: str, job_id: str, group: str | None, **options: Any) -> NewJob:
    return msgspec.structs.replace(new_job(queue, job_id, **options), group=group)


GROUP_LIMIT = QueueLimits(group_rate_max=2, group_rate_period_ms=1000)


async def test_each_group_gets_its_own_window_and_a_noisy_one_cannot_starve_the_others(
    backend: Backend, queue_name: str
) -> None:
    # the noisy tenant's backlog is enqueued first, the quiet one waits behind it
    await enqueue(
        backend,
        *(grouped(queue_name, f"noisy{i}", "noisy") for i in range(6)),
        *(grouped(queue_name, f"quiet{i}", "quiet") for i in range(3)),
    )
    await backend.set_limits(queue_name, GROUP_LIMIT)

    claimed = await claim(backend, queue_name, limit=10)

    assert sorted(c.record.id for c in claimed) == ["noisy0", "noisy1", "quiet0", "quiet1"]
    assert {c.record.group for c in claimed} == {"noisy", "quiet"}
    assert await claim(backend, queue_name, now=T0 + 999) == []
    again = await claim(backend, queue_name, limit=10, now=T0 + 1000)
    assert sorted(c.record.id for c in again) == ["noisy2", "noisy3", "quiet2"]


async def test_the_scanned_jobs_of_a_group_over_its_limit_wait_as_delayed_until_its_next_slot(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, *(grouped(queue_name, f"a{i}", "a") for i in range(4)))
    await backend.set_limits(queue_name, GROUP_LIMIT)
    assert len(await claim(backend, queue_name, limit=2, now=T0 + 100)) == 2

    assert await claim(backend, queue_name, now=T0 + 200) == []

    parked = await record(backend, queue_name, "a2")
    assert (parked.state, parked.ready_ms, parked.attempts) == (JobState.DELAYED, T0 + 1100, 0)
    counts = await backend.counts(queue_name)
    assert (counts[JobState.WAITING], counts[JobState.DELAYED]) == (0, 2)
    assert len(await claim(backend, queue_name, now=T0 + 1100)) == 2


async def test_jobs_without_a_group_are_not_group_limited(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(
        backend,
        *(grouped(queue_name, f"g{i}", "g") for i in range(4)),
        *(new_job(queue_name, f"plain{i}") for i in range(4)),
    )
    await backend.set_limits(queue_name, GROUP_LIMIT)

    claimed = await claim(backend, queue_name, limit=10)

    assert sorted(c.record.id for c in claimed) == ["g0", "g1", *(f"plain{i}" for i in range(4))]


async def test_claims_rotate_fairly_between_groups(backend: Backend, queue_name: str) -> None:
    await enqueue(
        backend,
        *(grouped(queue_name, f"a{i}", "a") for i in range(4)),
        *(grouped(queue_name, f"b{i}", "b") for i in range(2)),
        *(grouped(queue_name, f"c{i}", "c") for i in range(2)),
    )
    await backend.set_limits(queue_name, QueueLimits(group_rate_max=100, group_rate_period_ms=1000))

    served = []
    for n in range(6):
        [one] = await claim(backend, queue_name, limit=1, now=T0 + n)
        served.append(one.record.group)

    assert served == ["a", "b", "c", "a", "b", "c"]


async def test_the_queue_rate_and_the_group_rate_apply_together(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(
        backend,
        *(grouped(queue_name, f"a{i}", "a") for i in range(5)),
        *(grouped(queue_name, f"b{i}", "b") for i in range(5)),
    )
    await backend.set_limits(
        queue_name,
        QueueLimits(rate_max=3, rate_period_ms=1000, group_rate_max=2, group_rate_period_ms=1000),
    )

    claimed = await claim(backend, queue_name, limit=10)

    assert len(claimed) == 3
    assert sorted(c.record.group or "" for c in claimed) in (["a", "a", "b"], ["a", "b", "b"])


async def test_postpone_with_hold_holds_only_the_jobs_group(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(
        backend,
        *(grouped(queue_name, f"a{i}", "a") for i in range(3)),
        *(grouped(queue_name, f"b{i}", "b") for i in range(3)),
    )
    await backend.set_limits(queue_name, QueueLimits(group_rate_max=100, group_rate_period_ms=1000))
    [first] = await claim(backend, queue_name, limit=1)
    assert first.record.group == "a"

    await backend.postpone(lease_of(first), run_at_ms=T0 + 5000, hold=True, now_ms=T0 + 1)

    claimed = await claim(backend, queue_name, limit=10, now=T0 + 2)
    assert sorted(c.record.id for c in claimed) == ["b0", "b1", "b2"]
    assert (await record(backend, queue_name, "a1")).state == JobState.DELAYED
    assert (await backend.get_limits(queue_name, now_ms=T0 + 2)).held_until_ms is None
    later = await claim(backend, queue_name, limit=10, now=T0 + 5000)
    assert sorted(c.record.id for c in later) == ["a0", "a1", "a2"]
