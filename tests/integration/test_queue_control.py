"""Queue-level control seen by a running worker: pause/resume, cancel, batched claims."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from shigoto import App, JobCancelled, JobContext, JobState
from shigoto.testing import enqueued, run_until_empty, running_worker, wait_for

from ._support import FAST


async def test_a_paused_queue_is_not_consumed_until_resumed(app: App) -> None:
    ran: list[int] = []

    @app.job(queue="mail")
    async def send_mail(ctx: JobContext, n: int) -> None:
        ran.append(n)

    @app.job(queue="images")
    async def thumbnail(ctx: JobContext) -> str:
        return "ok"

    mail = app.queue("mail")
    await mail.pause()
    assert await mail.is_paused()
    jobs = [await send_mail.enqueue(n=n) for n in range(5)]
    other = await thumbnail.enqueue()

    async with running_worker(app, ["mail", "images"], concurrency=2, **FAST):
        # the other queue is served while this one is paused
        assert await other.wait_until_finished(timeout=5) == "ok"
        await asyncio.sleep(0.3)
        assert ran == []
        assert (await mail.counts())["waiting"] == 5

        await mail.resume()
        assert not await mail.is_paused()
        for job in jobs:
            await job.wait_until_finished(timeout=5)
    assert sorted(ran) == list(range(5))


async def test_a_paused_queue_stops_a_burst_worker_instead_of_hanging(app: App) -> None:
    queue = app.queue("reports")
    await queue.pause()
    await queue.add("nightly", {})
    worker = await run_until_empty(app, "reports", concurrency=1, timeout=5, **FAST)
    assert worker.processed == 0
    assert (await queue.counts())["waiting"] == 1


async def test_a_cancelled_waiting_job_never_runs(app: App) -> None:
    ran: list[str] = []

    @app.job
    async def notify(ctx: JobContext, user: str) -> None:
        ran.append(user)

    keep = await notify.enqueue(user="ann")
    drop = await notify.enqueue(user="bob")
    later = await notify.enqueue(user="cid", delay=60)
    assert await drop.cancel() is JobState.CANCELLED
    assert await app.queue().cancel(later.id) is JobState.CANCELLED
    assert await app.queue().cancel("no-such-job") is None
    assert [r.id for r in await enqueued(app, name="notify")] == [keep.id]

    await run_until_empty(app, concurrency=2, **FAST)
    assert ran == ["ann"]
    with pytest.raises(JobCancelled):
        await drop.wait_until_finished(timeout=1)
    record = await drop.refresh()
    assert record.state is JobState.CANCELLED and record.attempts == 0
    assert await later.state() is JobState.CANCELLED


async def test_claims_are_batched(app: App) -> None:
    @app.job
    async def noop(ctx: JobContext, n: int) -> int:
        await asyncio.sleep(0)
        return n

    await app.queue().add_bulk({"name": "noop", "data": {"n": n}} for n in range(500))
    backend = await app.backend()
    calls: dict[str, list[int]] = {"claim": [], "complete": []}

    def counting(name: str, method: Any) -> Any:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = await method(*args, **kwargs)
            calls[name].append(len(out))
            return out

        return wrapper

    backend.claim = counting("claim", backend.claim)  # type: ignore[method-assign]
    backend.complete = counting("complete", backend.complete)  # type: ignore[method-assign]
    worker = await run_until_empty(app, concurrency=50, **FAST)

    assert worker.processed == 500
    assert (await app.queue().counts())["completed"] == 500
    claimed = [n for n in calls["claim"] if n]
    assert sum(claimed) == 500
    # far fewer round trips than jobs, both ways
    assert len(claimed) <= 50, calls["claim"]
    assert max(claimed) == 50
    assert len(calls["complete"]) <= 100, calls["complete"]
    # never more than its free slots (no prefetch beyond concurrency)
    assert all(n <= 50 for n in claimed)


async def test_a_worker_never_holds_more_jobs_than_its_slots(app: App) -> None:
    running = 0
    peak = 0

    @app.job
    async def slow(ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await app.queue().add_bulk({"name": "slow"} for _ in range(30))
    async with running_worker(app, concurrency=3, **FAST):
        await wait_for(lambda: _active_at_most(app, 3), timeout=1, message="at most 3 active")
        await wait_for(lambda: _all_done(app, 30), timeout=10, message="all done")
    assert peak == 3


async def _active_at_most(app: App, n: int) -> bool:
    counts = await app.queue().counts()
    assert counts["active"] <= n
    return counts["active"] > 0


async def _all_done(app: App, n: int) -> bool:
    return (await app.queue().counts())["completed"] == n


async def test_a_burst_worker_exits_when_its_last_job_ends_not_an_idle_wait_later(
    app: App,
) -> None:
    @app.job(queue="tail")
    async def slow(ctx: JobContext) -> None:
        await asyncio.sleep(0.3)

    await slow.enqueue()
    # Its second claim finds nothing while the job still runs: the worker must look
    # again when the job ends, not block for the whole idle wait (10 s here).
    worker = app.worker(["tail"], 2, burst=True, handle_signals=False, idle_wait_s=10.0)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(worker.run(), timeout=20)
    assert worker.processed == 1
    assert asyncio.get_running_loop().time() - started < 3.0
