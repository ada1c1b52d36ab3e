"""Events a worker emits along a job's life, with the detail subscribers need."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from shigoto import App, Backoff, Event, JobContext, JobState
from shigoto.job import AttemptError
from shigoto.testing import run_until_empty, running_worker

from ._support import FAST

KINDS = ("active", "completed", "failed", "retrying", "dead", "stalled")


def _record_all(app: App) -> dict[str, list[Event]]:
    seen: dict[str, list[Event]] = defaultdict(list)
    for kind in KINDS:
        app.on(kind, lambda event, kind=kind: seen[kind].append(event))
    return seen


async def test_completed_failed_retrying_and_dead_carry_their_detail(app: App) -> None:
    seen = _record_all(app)

    @app.job
    async def ok(ctx: JobContext, n: int) -> dict[str, int]:
        await asyncio.sleep(0.02)
        return {"n": n}

    @app.job(attempts=2, backoff=Backoff.fixed(0.05))
    async def broken(ctx: JobContext) -> None:
        raise ConnectionError(f"refused on attempt {ctx.attempt}")

    good = await ok.enqueue(n=5)
    bad = await broken.enqueue()
    worker = await run_until_empty(app, concurrency=2, **FAST)

    [completed] = seen["completed"]
    assert (completed.job_id, completed.name, completed.queue) == (good.id, "ok", "default")
    assert completed.detail["result"] == {"n": 5}
    assert completed.detail["duration_ms"] >= 15
    assert completed.attempt == 1 and completed.worker_id == worker.id

    assert [e.job_id for e in seen["failed"]] == [bad.id, bad.id]
    assert [e.attempt for e in seen["failed"]] == [1, 2]
    first_error = seen["failed"][0].detail["error"]
    assert isinstance(first_error, AttemptError)
    assert first_error.error_type == "ConnectionError"
    assert first_error.message == "refused on attempt 1"

    [retrying] = seen["retrying"]
    assert retrying.job_id == bad.id and retrying.attempt == 1
    assert retrying.detail["delay_s"] == 0.05
    assert retrying.detail["error"].message == "refused on attempt 1"

    [dead] = seen["dead"]
    assert dead.job_id == bad.id and dead.attempt == 2
    assert dead.detail["reason"] == "retries_exhausted"
    assert dead.detail["error"].message == "refused on attempt 2"

    assert {e.job_id for e in seen["active"]} == {good.id, bad.id}
    assert seen["stalled"] == []


async def test_stalled_fires_when_a_lease_expires_and_the_job_runs_again(app: App) -> None:
    seen = _record_all(app)

    @app.job
    async def resumable(ctx: JobContext) -> str:
        return "second time lucky"

    job = await resumable.enqueue()
    backend = await app.backend()
    # another worker claims it and dies at once: a 1 ms lease nobody renews
    [claimed] = await backend.claim(
        "default", limit=1, worker_id="ghost", lease_ms=1, now_ms=app.clock.now_ms()
    )
    assert claimed.record.id == job.id
    await asyncio.sleep(0.01)

    async with running_worker(app, concurrency=1, **FAST) as worker:
        assert await job.wait_until_finished(timeout=5) == "second time lucky"

    [stalled] = seen["stalled"]
    assert stalled.job_id == job.id and stalled.queue == "default"
    assert stalled.detail == {"state": "waiting"}
    assert stalled.worker_id == worker.id  # who recovered it
    record = await job.refresh()
    assert record.state is JobState.COMPLETED and record.stalls == 1
    [note] = record.errors
    assert note.error_type == "Stalled" and note.worker_id == "ghost"
    assert "ghost" in note.message


async def test_async_listeners_work_and_a_failing_listener_disturbs_nothing(app: App) -> None:
    got: list[str] = []

    async def slow_listener(event: Event) -> None:
        await asyncio.sleep(0)
        got.append(event.job_id)

    def broken_listener(event: Event) -> None:
        raise RuntimeError("listener bug")

    @app.job
    async def fine(ctx: JobContext) -> int:
        return 1

    app.on("completed", broken_listener)
    jobs = [await fine.enqueue() for _ in range(3)]
    worker = app.worker(None, 2, burst=True, **FAST)
    worker.on("completed", slow_listener)
    await worker.run()
    assert sorted(got) == sorted(j.id for j in jobs)
    for job in jobs:
        assert await job.wait_until_finished(timeout=1) == 1


async def test_progress_events_reach_worker_and_app_subscribers(app: App) -> None:
    on_app: list[object] = []
    on_worker: list[object] = []

    @app.job
    async def steps(ctx: JobContext) -> None:
        for pct in (25, 50, 100):
            await ctx.update_progress(pct)

    app.on("progress", lambda e: on_app.append(e.detail["progress"]))
    job = await steps.enqueue()
    worker = app.worker(None, 1, burst=True, **FAST)
    worker.on("progress", lambda e: on_worker.append(e.detail["progress"]))
    await worker.run()
    await job.wait_until_finished(timeout=1)
    assert on_app == on_worker == [25, 50, 100]
