"""``@app.job(isolation="process")``: handlers that burn CPU, hang or crash run in a pooled
child process; the worker stays responsive, kills a child at the job's timeout, records
a crash with its signal or exit code, and keeps serving."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from shigoto import App, Backoff, JobFailed, JobState
from shigoto.errors import ConfigurationError
from shigoto.testing import running_worker
from shigoto.worker import Worker

from . import workers_app
from ._support import FAST


def _isolated(app: App, fn: Any, **options: Any) -> Any:
    return app.job(isolation="process", **options)(fn)


async def _dead(job: Any) -> Any:
    with pytest.raises(JobFailed):
        await job.wait_until_finished(timeout=15)
    record = await job.refresh()
    assert record.state == JobState.DEAD
    return record


def _pool_started(worker: Worker) -> int:
    assert worker._pool is not None
    return worker._pool.started


async def test_a_cpu_bound_handler_does_not_block_the_event_loop(app: App) -> None:
    crunch = _isolated(app, workers_app.crunch)
    gaps: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    jobs = [await crunch.enqueue(n=2_000_000 + i) for i in range(2)]
    async with running_worker(app, concurrency=2, **FAST):
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        results = [await job.wait_until_finished(timeout=30) for job in jobs]
        stop.set()
        await tick
    assert results == [(n - 1) * n * (2 * n - 1) // 6 for n in (2_000_000, 2_000_001)]
    assert max(gaps) < 0.25, f"event loop stalled for {max(gaps):.2f} s"


async def test_a_hanging_handler_is_killed_at_its_timeout_and_the_worker_keeps_serving(
    app: App,
) -> None:
    spin = _isolated(app, workers_app.spin, timeout=0.5, attempts=2, backoff=0.01)
    report = _isolated(app, workers_app.report)
    hung = await spin.enqueue()
    async with running_worker(app, concurrency=1, **FAST) as worker:
        record = await _dead(hung)
        after = await report.enqueue(steps=2)
        assert (await after.wait_until_finished(timeout=15)).endswith("did 2 steps")
        assert _pool_started(worker) == 3  # each killed child was replaced
    assert record.reason == "timeout"
    assert [e.error_type for e in record.errors] == ["shigoto.worker.JobTimeout"] * 2
    assert "timeout of 0.5 s" in record.errors[-1].message


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (workers_app.hard_exit, "crashed: exit code 1"),
        (workers_app.segfault, "crashed: signal 11 (SIGSEGV)"),
    ],
    ids=["os._exit(1)", "segfault"],
)
async def test_a_crashing_handler_is_retried_then_dead_with_the_reason(
    app: App, handler: Any, expected: str
) -> None:
    crash = _isolated(app, handler, attempts=2, backoff=Backoff.fixed(0.01))
    report = _isolated(app, workers_app.report)
    job = await crash.enqueue()
    async with running_worker(app, concurrency=2, **FAST) as worker:
        record = await _dead(job)
        assert (await (await report.enqueue(steps=1)).wait_until_finished(timeout=15)).startswith(
            "pid"
        )
        assert worker.failed == 2
    assert record.reason == "crashed"
    assert len(record.errors) == 2
    for error in record.errors:
        assert error.error_type == "shigoto.isolation.ProcessCrashed"
        assert error.message.startswith(expected)


async def test_progress_and_results_come_back_from_the_child(app: App) -> None:
    report = _isolated(app, workers_app.report)
    async_report = _isolated(app, workers_app.async_report)
    seen: list[Any] = []
    app.on("progress", lambda event: seen.append((event.job_id, event.detail["progress"])))
    a = await report.enqueue(steps=4)
    b = await async_report.enqueue(value=21)
    async with running_worker(app, concurrency=2, **FAST):
        text = await a.wait_until_finished(timeout=15)
        result = await b.wait_until_finished(timeout=15)
    assert int(text.split()[1]) != os.getpid()
    assert result["value"] == 42 and result["pid"] != os.getpid()
    assert await a.progress() == 100
    assert await b.progress() == {"value": 21}
    assert [p for job_id, p in seen if job_id == a.id] == [25, 50, 75, 100]


async def test_an_exception_keeps_its_type_and_the_childs_traceback(app: App) -> None:
    flaky = _isolated(app, workers_app.fail_once, attempts=2, backoff=0.01)
    job = await flaky.enqueue()
    async with running_worker(app, concurrency=1, **FAST):
        assert await job.wait_until_finished(timeout=15) == "second attempt ok"
    [error] = (await job.refresh()).errors
    assert error.error_type == "ValueError" and error.message == "first attempt fails"
    assert "workers_app.py" in error.traceback and "in fail_once" in error.traceback


async def test_a_busy_child_keeps_its_lease(app: App) -> None:
    """Heartbeats come from the worker, so a child busy past the lease keeps the job."""
    crunch = _isolated(app, workers_app.crunch)
    job = await crunch.enqueue(n=6_000_000)  # about a second: twice the lease
    async with running_worker(app, concurrency=1, **{**FAST, "lease_s": 0.5}):
        assert await job.wait_until_finished(timeout=30) > 0
    record = await job.refresh()
    assert record.stalls == 0 and record.attempts == 1


def test_registration_checks() -> None:
    app = App("sqlite:///unused.db")

    def local(ctx: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="module level"):
        app.job(isolation="process")(local)
    with pytest.raises(ConfigurationError, match="isolation must be None or 'process'"):
        app.job(isolation="thread")(workers_app.spin)
    handler = app.job(isolation="process")(workers_app.spin)
    assert handler.isolation == "process"


async def test_retry_and_unrecoverable_steer_the_worker_from_the_child(app: App) -> None:
    ask_later = _isolated(app, workers_app.ask_later, attempts=2)
    refuse = _isolated(app, workers_app.refuse, attempts=5)
    a = await ask_later.enqueue()
    b = await refuse.enqueue()
    async with running_worker(app, concurrency=2, **FAST):
        assert await a.wait_until_finished(timeout=15) == "retried"
        record = await _dead(b)
    assert record.reason == "unrecoverable" and len(record.errors) == 1
    assert record.errors[0].message == "business rule says no"


async def test_shutdown_releases_an_isolated_job_and_leaves_no_child_behind(app: App) -> None:
    spin = _isolated(app, workers_app.spin)  # no timeout: only the shutdown stops it
    report = _isolated(app, workers_app.report)
    idle_job = await report.enqueue(steps=1)
    job = await spin.enqueue()
    async with running_worker(app, concurrency=2, **{**FAST, "shutdown_grace_s": 0.2}) as worker:
        await idle_job.wait_until_finished(timeout=15)
        while await job.state() != JobState.ACTIVE:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert worker._pool is not None
        pids = worker._pool.pids()
        assert len(pids) == 2
    record = await job.refresh()
    assert record.state == JobState.WAITING and record.attempts == 0
    for _ in range(100):
        if not any(_alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
