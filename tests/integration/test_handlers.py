"""Handlers end to end: async and plain ``def`` handlers, progress, results and failures."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shigoto import (
    App,
    Event,
    JobContext,
    JobFailed,
    JobState,
    SyncJobContext,
    UnrecoverableError,
    WaitTimeout,
)
from shigoto.testing import run_until_empty, running_worker, wait_for

from ._support import FAST


async def test_async_and_def_handlers_both_run_with_their_own_context(app: App) -> None:
    seen: dict[str, tuple[type, str]] = {}

    @app.job
    async def double(ctx: JobContext, x: int) -> int:
        seen["double"] = (type(ctx), threading.current_thread().name)
        return x * 2

    @app.job
    def increment(ctx: SyncJobContext, x: int) -> int:
        seen["increment"] = (type(ctx), threading.current_thread().name)
        return x + 1

    a = await double.enqueue(x=21)
    b = await increment.enqueue(x=41)
    worker = await run_until_empty(app, concurrency=2, **FAST)

    assert await a.wait_until_finished(timeout=2) == 42
    assert await b.wait_until_finished(timeout=2) == 42
    assert worker.processed == 2 and worker.failed == 0
    assert seen["double"][0] is JobContext
    assert seen["increment"][0] is SyncJobContext
    # the def handler ran on a pool thread, not on the event loop's thread
    assert seen["increment"][1].startswith("shigoto-job")
    assert seen["double"][1] == threading.current_thread().name


@pytest.mark.parametrize("kind", ["async", "def"])
async def test_progress_is_visible_while_running_and_as_events(app: App, kind: str) -> None:
    release_async = asyncio.Event()
    release_thread = threading.Event()

    if kind == "async":

        @app.job(name="import_rows")
        async def import_rows_async(ctx: JobContext) -> str:
            await ctx.update_progress(50)
            await release_async.wait()
            await ctx.update_progress({"done": 100, "total": 100})
            return "ok"

    else:

        @app.job(name="import_rows")
        def import_rows_def(ctx: SyncJobContext) -> str:
            ctx.update_progress(50)  # blocks until recorded, from the pool thread
            release_thread.wait(10)
            ctx.update_progress({"done": 100, "total": 100})
            return "ok"

    events: list[Event] = []
    app.on("progress", events.append)
    job = await app.queue().add("import_rows")

    async with running_worker(app, concurrency=1, **FAST):
        assert await wait_for(lambda: _progress_is(job, 50), timeout=5, message="progress 50")
        assert await job.state() is JobState.ACTIVE
        release_async.set()
        release_thread.set()
        assert await job.wait_until_finished(timeout=5) == "ok"

    assert await job.progress() == {"done": 100, "total": 100}
    assert [e.detail["progress"] for e in events] == [50, {"done": 100, "total": 100}]
    assert all(e.job_id == job.id and e.name == "import_rows" for e in events)


async def _progress_is(job: object, value: object) -> bool:
    from shigoto import Job

    assert isinstance(job, Job)
    return bool(await job.progress() == value)


async def test_wait_until_finished_returns_the_result(app: App) -> None:
    @app.job
    async def shout(ctx: JobContext, word: str) -> dict[str, str]:
        return {"word": word.upper()}

    job = await shout.enqueue(word="hai")
    async with running_worker(app, concurrency=1, **FAST):
        assert await job.wait_until_finished(timeout=5) == {"word": "HAI"}


async def test_wait_until_finished_raises_job_failed_with_the_recorded_error(app: App) -> None:
    @app.job
    async def charge(ctx: JobContext, order_id: int) -> None:
        raise UnrecoverableError(f"order {order_id} has no payment method")

    job = await charge.enqueue(order_id=7)
    async with running_worker(app, concurrency=1, **FAST):
        with pytest.raises(JobFailed) as info:
            await job.wait_until_finished(timeout=5)

    failure = info.value
    assert failure.job_id == job.id
    assert failure.reason == "unrecoverable"
    assert failure.error_type == "shigoto.retry.UnrecoverableError"
    assert failure.error_message == "order 7 has no payment method"
    assert "order 7 has no payment method" in str(failure)


async def test_wait_until_finished_times_out_and_leaves_the_job_alone(app: App) -> None:
    job = await app.queue().add("nobody_runs_this")  # no worker at all
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=job.id):
        await job.wait_until_finished(timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2
    assert await job.state() is JobState.WAITING


async def test_a_handler_that_raises_has_every_attempt_recorded(app: App) -> None:
    @app.job(attempts=3, backoff=0)
    async def flaky_sync(ctx: JobContext, account: str) -> None:
        raise ValueError(f"{account}: remote said no on attempt {ctx.attempt}")

    job = await flaky_sync.enqueue(account="acme")
    worker = await run_until_empty(app, concurrency=1, **FAST)

    record = await job.refresh()
    assert record.state is JobState.DEAD
    assert record.reason == "retries_exhausted"
    assert record.attempts == 3
    assert worker.failed == 3
    assert [e.attempt for e in record.errors] == [1, 2, 3]
    for number, error in enumerate(record.errors, start=1):
        assert error.error_type == "ValueError"
        assert error.message == f"acme: remote said no on attempt {number}"
        assert "Traceback" in error.traceback
        assert "flaky_sync" in error.traceback  # the frame of the handler
        assert error.worker_id == worker.id
        assert error.started_ms is not None and error.started_ms <= error.ended_ms


async def test_a_def_handler_that_raises_is_recorded_the_same_way(app: App) -> None:
    @app.job(attempts=1)
    def parse(ctx: SyncJobContext, text: str) -> int:
        return int(text)

    job = await parse.enqueue(text="forty-two")
    await run_until_empty(app, concurrency=1, **FAST)
    record = await job.refresh()
    assert record.state is JobState.DEAD
    [error] = record.errors
    assert error.error_type == "ValueError"
    assert "forty-two" in error.message
    assert "in parse" in error.traceback


async def test_a_handler_over_its_timeout_is_retried_then_dead_and_the_worker_serves_on(
    app: App,
) -> None:
    @app.job(attempts=2, backoff=0, timeout=0.2)
    async def hang(ctx: JobContext) -> None:
        await asyncio.sleep(30)

    @app.job
    async def quick(ctx: JobContext, n: int) -> int:
        return n

    stuck = await hang.enqueue()
    others = [await quick.enqueue(n=n) for n in range(5)]
    started = time.monotonic()
    await run_until_empty(app, concurrency=2, **FAST)
    assert time.monotonic() - started < 5

    record = await stuck.refresh()
    assert record.state is JobState.DEAD
    assert record.reason == "timeout"
    assert [e.error_type for e in record.errors] == ["shigoto.worker.JobTimeout"] * 2
    assert "0.2 s" in record.errors[0].message
    assert [await j.wait_until_finished(timeout=1) for j in others] == list(range(5))


async def test_a_def_handler_over_its_timeout_is_dead_with_reason_timeout(app: App) -> None:
    @app.job(attempts=1, timeout=0.2)
    def crunch(ctx: SyncJobContext) -> None:
        time.sleep(1)  # a thread cannot be killed; the worker stops waiting for it

    job = await crunch.enqueue()
    await run_until_empty(app, concurrency=1, **FAST)
    record = await job.refresh()
    assert record.state is JobState.DEAD
    assert record.reason == "timeout"
    assert record.errors[-1].error_type == "shigoto.worker.JobTimeout"


async def test_a_job_without_handler_goes_dead_and_the_worker_keeps_running(app: App) -> None:
    @app.job
    async def known(ctx: JobContext) -> str:
        return "done"

    orphan = await app.queue().add("renamed_last_week", {"user_id": 1})
    fine = await known.enqueue()
    worker = await run_until_empty(app, "default", concurrency=1, **FAST)

    record = await orphan.refresh()
    assert record.state is JobState.DEAD
    assert record.reason == "no_handler"
    assert record.attempts == 1  # no retries: another attempt cannot help
    [error] = record.errors
    assert error.error_type == "shigoto.worker.NoHandler"
    assert "'renamed_last_week'" in error.message and "known" in error.message
    assert await fine.wait_until_finished(timeout=1) == "done"
    assert worker.processed == 1
