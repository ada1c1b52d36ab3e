"""Graceful shutdown: running jobs finish within the grace period, the rest go back."""

from __future__ import annotations

import asyncio
import time

from shigoto import App, JobContext, JobState
from shigoto.testing import run_until_empty, wait_for

from ._support import FAST


async def test_stop_lets_running_jobs_finish_within_grace(app: App) -> None:
    started: list[str] = []

    @app.job
    async def resize_image(ctx: JobContext, n: int) -> int:
        started.append(ctx.job_id)
        await asyncio.sleep(0.5)
        return n

    jobs = [await resize_image.enqueue(n=n) for n in range(4)]
    worker = app.worker(None, 4, **{**FAST, "shutdown_grace_s": 5})
    task = asyncio.create_task(worker.run())
    await wait_for(lambda: len(started) == 4, message="all four jobs started")

    stop_at = time.monotonic()
    worker.stop()
    await asyncio.wait_for(task, 5)
    stopped_after = time.monotonic() - stop_at

    assert stopped_after < 1.5  # waited for the jobs (0.5 s), not for the whole grace
    for n, job in enumerate(jobs):
        record = await job.refresh()
        assert record.state is JobState.COMPLETED
        assert record.result_value == n and record.attempts == 1 and record.errors == []


async def test_a_job_past_the_grace_is_released_uncounted_and_finished_by_another_worker(
    app: App,
) -> None:
    runs: list[str] = []

    @app.job
    async def batch_import(ctx: JobContext, rows: int) -> int:
        runs.append(ctx.worker_id)
        if len(runs) == 1:
            await asyncio.sleep(30)  # the first run is interrupted by the shutdown
        return rows

    @app.job
    async def short(ctx: JobContext, n: int) -> int:
        await asyncio.sleep(0.05)
        return n

    long_job = await batch_import.enqueue(rows=1000)
    quick = [await short.enqueue(n=n) for n in range(20)]
    first = app.worker(None, 4, **{**FAST, "shutdown_grace_s": 0.2, "name": "first"})
    task = asyncio.create_task(first.run())
    await wait_for(lambda: runs == ["first"], message="long job started")

    stop_at = time.monotonic()
    first.stop()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - stop_at < 1.5

    record = await long_job.refresh()
    assert record.state is JobState.WAITING
    assert record.attempts == 0  # the interrupted attempt does not count
    assert record.errors[-1].error_type == "WorkerShutdown"
    assert "attempt not counted" in record.errors[-1].message

    second = await run_until_empty(app, concurrency=4, **{**FAST, "name": "second"})
    assert runs == ["first", "second"]
    assert await long_job.wait_until_finished(timeout=1) == 1000
    assert (await long_job.refresh()).attempts == 1
    assert [await j.wait_until_finished(timeout=1) for j in quick] == list(range(20))
    assert second.processed + first.processed == 21
    counts = await app.queue().counts()
    assert counts["completed"] == 21 and counts["active"] == counts["waiting"] == 0


async def test_stopping_under_load_loses_no_job(app: App) -> None:
    @app.job
    async def work(ctx: JobContext, n: int) -> int:
        await asyncio.sleep(0.01 * (n % 7))
        return n

    jobs = await app.queue().add_bulk({"name": "work", "data": {"n": n}} for n in range(300))
    for _ in range(3):  # three workers in a row, each stopped after a short while
        worker = app.worker(None, 8, **{**FAST, "shutdown_grace_s": 0.03})
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.15)
        worker.stop()
        await asyncio.wait_for(task, 5)
        counts = await app.queue().counts()
        assert counts["active"] == 0  # everything unfinished went back to waiting

    await run_until_empty(app, concurrency=8, **FAST)
    counts = await app.queue().counts()
    assert counts["completed"] == 300, counts
    results = [await j.wait_until_finished(timeout=1) for j in jobs]
    assert results == list(range(300))


async def test_a_worker_stopped_before_it_started_runs_no_job_and_returns(app: App) -> None:
    @app.job
    async def send_welcome(ctx: JobContext) -> None:
        raise AssertionError("a stopped worker must not run jobs")

    job = await send_welcome.enqueue()
    worker = app.worker(None, 2, **FAST)
    worker.stop()

    await asyncio.wait_for(worker.run(), 5)

    assert (await job.refresh()).state is JobState.WAITING
