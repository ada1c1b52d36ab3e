"""A claim sent along with the blocking wait (``RedisBackend.wait_and_claim``): one
round trip from wake-up to leased job on a standalone Redis, the usual wait-then-claim
on a cluster, and neither misses a job nor leaves a ghost behind."""

from __future__ import annotations

import asyncio
import time

import pytest

from shigoto import App, JobContext
from shigoto.backends.contract import ClaimsOnWake, NewJob, QueueLimits
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.records import queue_keys
from shigoto.clock import FrozenClock
from shigoto.job import JobOptions, JobState

from .servers import RedisServer

T0 = 1_700_000_000_000
LEASE_MS = 60_000


def job(queue: str, job_id: str) -> NewJob:
    now = int(time.time() * 1000)
    return NewJob(job_id, queue, "task", b"{}", JobOptions(), now, now)


def frozen() -> int:
    """A caller's clock that is years behind: shows which clock a claim read."""
    return T0


async def wait_and_claim(rb: RedisBackend, queue: str, timeout_s: float = 5.0) -> list[str]:
    claimed = await rb.wait_and_claim(
        queue, limit=10, worker_id="w", lease_ms=LEASE_MS, timeout_s=timeout_s, clock=frozen
    )
    return [c.record.id for c in claimed]


async def test_a_job_added_during_the_wait_is_claimed_by_it(
    rb: RedisBackend, backend_url: str, queue_name: str
) -> None:
    assert isinstance(rb, ClaimsOnWake)
    producer = RedisBackend(backend_url)
    try:
        waiting = asyncio.create_task(wait_and_claim(rb, queue_name))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await producer.enqueue([job(queue_name, "a")], int(time.time() * 1000))
        assert await asyncio.wait_for(waiting, 3.0) == ["a"]
        assert time.monotonic() - started < 1.0
    finally:
        await producer.close()
    record = await rb.get(queue_name, "a")
    assert record is not None and record.state is JobState.ACTIVE
    assert record.lease_until_ms is not None
    if rb.is_cluster:
        # wait, then the usual claim with the caller's clock
        assert record.lease_until_ms == T0 + LEASE_MS
    else:
        # the claim rode behind the wait and ran on the server: Redis' clock
        now = time.time() * 1000
        assert now - 2_000 < record.lease_until_ms - LEASE_MS <= now + 1_000


async def test_a_job_already_waiting_is_claimed_at_once(rb: RedisBackend, queue_name: str) -> None:
    await rb.enqueue([job(queue_name, "a"), job(queue_name, "b")], int(time.time() * 1000))
    started = time.monotonic()
    assert await wait_and_claim(rb, queue_name) == ["a", "b"]
    assert time.monotonic() - started < 0.5


async def test_a_wait_that_times_out_claims_nothing_and_returns_on_time(
    rb: RedisBackend, queue_name: str
) -> None:
    started = time.monotonic()
    assert await wait_and_claim(rb, queue_name, timeout_s=0.3) == []
    assert 0.25 < time.monotonic() - started < 2.0


async def test_a_cancelled_wait_leaves_no_ghost_that_swallows_the_next_job(
    rb: RedisBackend, backend_url: str, queue_name: str
) -> None:
    waiting = asyncio.create_task(wait_and_claim(rb, queue_name, timeout_s=30.0))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    producer = RedisBackend(backend_url)
    try:
        await asyncio.sleep(0.05)
        again = asyncio.create_task(wait_and_claim(rb, queue_name))
        await asyncio.sleep(0.1)
        await producer.enqueue([job(queue_name, "a")], int(time.time() * 1000))
        assert await asyncio.wait_for(again, 3.0) == ["a"]
    finally:
        await producer.close()


async def test_a_queue_held_by_its_rate_limit_waits_for_its_next_slot(
    rb: RedisBackend, queue_name: str
) -> None:
    await rb.set_limits(queue_name, QueueLimits(rate_max=1, rate_period_ms=500))
    await rb.enqueue([job(queue_name, "a"), job(queue_name, "b")], int(time.time() * 1000))
    claims = []
    started = time.monotonic()
    for _ in range(2):
        claims += await rb.wait_and_claim(
            queue_name,
            limit=10,
            worker_id="w",
            lease_ms=LEASE_MS,
            timeout_s=5.0,
            clock=lambda: int(time.time() * 1000),
        )
    assert [c.record.id for c in claims] == ["a", "b"]
    assert 0.3 < time.monotonic() - started < 2.0


def wall() -> int:
    return int(time.time() * 1000)


async def claim_when_due(rb: RedisBackend, queue: str) -> list[str]:
    """Wait-and-claim until a job comes (the first wake-up may be the enqueue's own)."""
    while True:
        claimed = await rb.wait_and_claim(
            queue, limit=10, worker_id="w", lease_ms=LEASE_MS, timeout_s=5.0, clock=wall
        )
        if claimed:
            return [c.record.id for c in claimed]


async def test_a_wait_cut_short_by_a_delayed_job_ends_when_it_is_due(
    rb: RedisBackend, queue_name: str
) -> None:
    """Not at Redis' next cron tick (``hz`` 10: up to 100 ms later, so 7 waits would
    all be under 50 ms late about once in a hundred runs): the backend sets the marker
    the wait blocks on itself, when the job comes due."""
    late = []
    for n in range(7):
        now = wall()
        await rb.enqueue(
            [NewJob(f"d{n}", queue_name, "task", b"{}", JobOptions(), now, now + 150)], now
        )
        assert (
            await rb.claim(queue_name, limit=10, worker_id="w", lease_ms=LEASE_MS, now_ms=now) == []
        )
        assert await claim_when_due(rb, queue_name) == [f"d{n}"]
        late.append(time.time() - (now + 150) / 1000)
    assert max(late) < 0.05, late


async def test_a_wait_that_ends_before_the_due_time_leaves_no_marker_behind(
    rb: RedisBackend, backend_url: str, queue_name: str
) -> None:
    now = wall()
    await rb.enqueue(
        [NewJob("later", queue_name, "task", b"{}", JobOptions(), now, now + 300)], now
    )
    assert await rb.claim(queue_name, limit=10, worker_id="w", lease_ms=LEASE_MS, now_ms=now) == []
    producer = RedisBackend(backend_url)
    try:
        # the enqueue's own wake-up (the wall clock: the due time is read against it)
        await rb.wait_and_claim(
            queue_name, limit=10, worker_id="w", lease_ms=LEASE_MS, timeout_s=0.05, clock=wall
        )
        waiting = asyncio.create_task(claim_when_due(rb, queue_name))
        await asyncio.sleep(0.05)
        await producer.enqueue([job(queue_name, "now")], wall())
        assert await asyncio.wait_for(waiting, 3.0) == ["now"]
        await asyncio.sleep(0.4)  # past the delayed job's due time
        marker = queue_keys(rb.prefix, queue_name).marker
        assert await rb._call("ZCARD", marker) == 0  # the wake-up was called off
    finally:
        await producer.close()


async def test_scripts_flushed_during_the_wait_are_sent_again(own_server: RedisServer) -> None:
    url = own_server.url()  # one prefix for both
    rb, producer = RedisBackend(url), RedisBackend(url)
    try:
        await rb.connect()
        await rb.enqueue([job("q", "warm-up")], int(time.time() * 1000))
        assert await wait_and_claim(rb, "q") == ["warm-up"]
        with own_server.client() as client:
            client.script_flush()
        reloads = rb.script_reloads
        waiting = asyncio.create_task(wait_and_claim(rb, "q"))
        await asyncio.sleep(0.1)
        await producer.enqueue([job("q", "a")], int(time.time() * 1000))
        assert await asyncio.wait_for(waiting, 3.0) == ["a"]
        assert rb.script_reloads == reloads + 1
    finally:
        await rb.close()
        await producer.close()


async def test_a_worker_claims_behind_its_wait_only_where_that_is_exact(
    backend_url: str, queue_name: str
) -> None:
    """One queue and the wall clock: the claim reads the server's time, so a frozen
    clock (tests) or several queues (one claim per queue) wait the usual way."""
    app = App(backend_url)
    try:
        backend = await app.backend()
        assert app.worker([queue_name])._claims_on_wake(backend) is backend
        assert app.worker([queue_name, "other"])._claims_on_wake(backend) is None
        assert app.worker([queue_name], burst=True)._claims_on_wake(backend) is None
    finally:
        await app.close()
    frozen_app = App(backend_url, clock=FrozenClock())
    try:
        backend = await frozen_app.backend()
        assert frozen_app.worker([queue_name])._claims_on_wake(backend) is None
    finally:
        await frozen_app.close()


async def test_an_idle_worker_stops_at_once_and_swallows_no_later_job(
    backend_url: str, queue_name: str
) -> None:
    """Stopping cancels the parked wait-then-claim itself: the worker returns now, not
    when its idle wait times out, and leaves no wait behind to claim the next job."""
    app = App(backend_url)
    ran: list[int] = []

    @app.job(queue=queue_name)
    async def probe(ctx: JobContext, n: int) -> None:
        ran.append(n)

    try:
        worker = app.worker([queue_name], idle_wait_s=30.0, handle_signals=False)
        running = asyncio.create_task(worker.run())
        await app.queue(queue_name).add("probe", {"n": 1})
        for _ in range(200):
            if ran:
                break
            await asyncio.sleep(0.01)
        assert ran == [1]
        await asyncio.sleep(0.1)  # parked in its wait again

        started = time.monotonic()
        worker.stop()
        await asyncio.wait_for(running, 5.0)
        assert time.monotonic() - started < 1.0

        job = await app.queue(queue_name).add("probe", {"n": 2})
        await asyncio.sleep(0.2)
        assert (await job.state()) is JobState.WAITING and ran == [1]
    finally:
        await app.close()
