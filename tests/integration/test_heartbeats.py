"""Leases stay alive while handlers run — even handlers that block the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from shigoto import App, Job, JobContext, JobState, LeaseLost, SyncJobContext
from shigoto.backends.contract import Recovered
from shigoto.testing import run_until_empty, running_worker, wait_for

from ._support import FAST

LONG_LEASE: dict[str, Any] = {**FAST, "lease_s": 1.0, "heartbeat_s": 0.25}


def _run_in_thread(app: App, **settings: Any) -> tuple[threading.Thread, list[Any]]:
    """Run a burst worker on its own event loop in a thread; the test loop stays free."""
    box: list[Any] = []

    def target() -> None:
        async def main() -> None:
            try:
                worker = app.worker(None, 1, burst=True, **settings)
                box.append(worker)
                await worker.run()
            finally:
                await app.close()

        asyncio.run(main())

    thread = threading.Thread(target=target, name="test-worker")
    thread.start()
    return thread, box


async def _stall_sweeps_during(app: App, queue: str, seconds: float) -> list[Recovered]:
    """What another worker's maintenance loop would recover, checked every 50 ms."""
    backend = await app.backend()
    recovered: list[Recovered] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        recovered += await backend.recover_stalled(queue, now_ms=app.clock.now_ms(), limit=10)
        await asyncio.sleep(0.05)
    return recovered


@pytest.mark.parametrize("blocking", [False, True], ids=["awaiting", "blocking-the-loop"])
async def test_a_job_longer_than_its_lease_is_not_recovered_as_stalled(
    app: App, blocking: bool
) -> None:
    @app.job
    async def long_report(ctx: JobContext) -> str:
        if blocking:
            time.sleep(3)  # blocks the worker's event loop: only the heartbeat thread runs
        else:
            await asyncio.sleep(3)
        return "report ready"

    job = await long_report.enqueue()
    thread, _ = _run_in_thread(app, **LONG_LEASE)
    try:
        await wait_for(lambda: _state_is(job, JobState.ACTIVE), message="job active")
        recovered = await _stall_sweeps_during(app, "default", 3.5)
    finally:
        await asyncio.to_thread(thread.join, 10)

    assert recovered == []
    assert await job.wait_until_finished(timeout=2) == "report ready"
    record = await job.refresh()
    assert record.attempts == 1 and record.stalls == 0 and record.errors == []


async def _state_is(job: Job, state: JobState) -> bool:
    return await job.state() is state


async def test_extend_lock_pushes_the_lease_out(app: App) -> None:
    seen: dict[str, int] = {}

    @app.job
    async def slow_export(ctx: JobContext) -> None:
        before = await _lease_until(ctx)
        await ctx.extend_lock(60)
        seen["before"], seen["after"], seen["now"] = (
            before,
            await _lease_until(ctx),
            app.clock.now_ms(),
        )

    @app.job
    def slow_export_def(ctx: SyncJobContext) -> None:
        ctx.extend_lock(60)  # the blocking twin works from the handler's thread

    async def _lease_until(ctx: JobContext) -> int:
        record = await (await app.backend()).get(ctx.queue, ctx.job_id)
        assert record is not None and record.lease_until_ms is not None
        return record.lease_until_ms

    jobs = [await slow_export.enqueue(), await slow_export_def.enqueue()]
    # heartbeats every 0.9 s would pull the lease back to now + 1 s; none falls in between
    async with running_worker(app, concurrency=1, **{**FAST, "heartbeat_s": 0.9}):
        for job in jobs:
            await job.wait_until_finished(timeout=5)

    assert seen["before"] <= seen["now"] + 1_000
    assert seen["after"] >= seen["now"] + 59_000


async def test_extend_lock_raises_lease_lost_once_the_job_was_taken_back(app: App) -> None:
    outcome: dict[str, BaseException] = {}
    went_stale = asyncio.Event()

    @app.job(attempts=1)
    async def fragile(ctx: JobContext) -> None:
        if ctx.attempt == 1 and "error" not in outcome:
            await went_stale.wait()
            try:
                await ctx.extend_lock()
            except LeaseLost as exc:
                outcome["error"] = exc
                raise

    job = await fragile.enqueue()
    async with running_worker(app, concurrency=1, **{**FAST, "heartbeat_s": 0.9}):
        await wait_for(lambda: _state_is(job, JobState.ACTIVE), message="job active")
        backend = await app.backend()
        # as if the lease had expired and a sweeper took the job back
        await backend.recover_stalled("default", now_ms=app.clock.now_ms() + 10_000, limit=10)
        went_stale.set()
        await wait_for(lambda: "error" in outcome, message="LeaseLost raised")
        await job.wait_until_finished(timeout=5)  # the retake runs it to completion

    assert "lease lost" in str(outcome["error"])
    record = await job.refresh()
    assert record.state is JobState.COMPLETED
    assert [e.error_type for e in record.errors] == ["Stalled"]


@pytest.mark.parametrize("kind", ["async", "def"])
async def test_a_cancelled_active_job_sees_the_flag_and_ends_cancelled(app: App, kind: str) -> None:
    saw_flag = threading.Event()

    if kind == "async":

        @app.job(name="crawl")
        async def crawl_async(ctx: JobContext) -> None:
            for _ in range(200):
                if ctx.cancelled:
                    saw_flag.set()
                ctx.raise_if_cancelled()
                await asyncio.sleep(0.02)

    else:

        @app.job(name="crawl")
        def crawl_def(ctx: SyncJobContext) -> None:
            for _ in range(200):
                if ctx.cancelled:
                    saw_flag.set()
                ctx.raise_if_cancelled()
                time.sleep(0.02)

    job = await app.queue().add("crawl", attempts=3)
    async with running_worker(app, concurrency=1, **FAST):
        await wait_for(lambda: _state_is(job, JobState.ACTIVE), message="job active")
        assert await job.cancel() is JobState.ACTIVE  # flagged, still running
        with pytest.raises(Exception, match="cancelled"):
            await job.wait_until_finished(timeout=3)

    assert saw_flag.is_set()
    record = await job.refresh()
    assert record.state is JobState.CANCELLED
    assert record.reason == "cancelled"
    assert record.attempts == 1  # a cancellation is never retried
    assert record.errors[-1].error_type == "shigoto.context.JobCancelledError"


async def test_a_job_retried_at_once_by_the_same_worker_keeps_its_new_lease(app: App) -> None:
    """Bookkeeping of the failed attempt must not clobber the next attempt's lease.

    With no backoff, the same worker may claim the job again before the failed
    attempt's cleanup ran (here: a slow ``retrying`` listener in between; on Redis the
    claim and the retry simply race). The new attempt must still be heartbeated and
    counted as running, so it is neither recovered as stalled nor released early.
    """

    @app.job(attempts=2, backoff=0)
    async def second_time_slow(ctx: JobContext) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("refused")
        await asyncio.sleep(2)  # twice the lease: only heartbeats keep it
        return ctx.attempt

    async def slow_listener(event: object) -> None:
        await asyncio.sleep(0.2)

    app.on("retrying", slow_listener)
    job = await second_time_slow.enqueue()
    await run_until_empty(app, concurrency=2, **FAST)

    record = await job.refresh()
    assert record.state is JobState.COMPLETED, record
    assert record.result_value == 2
    assert record.stalls == 0
    assert [e.error_type for e in record.errors] == ["ConnectionError"]
