"""Faults the Redis backend must survive: a restarted server, a worker killed with
SIGKILL, and a long run that must leave Redis' memory where it found it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from shigoto import App, JobContext, JobState

from .servers import RedisServer

HERE = Path(__file__).parent


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll ``check`` until true; returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def running(worker: Any) -> AsyncIterator[Any]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop(now=True)
        await asyncio.wait_for(task, 30)


async def counts(app: App, queue: str) -> dict[str, int]:
    return await app.queue(queue).counts()


@pytest.mark.slow
async def test_a_redis_restart_mid_run_loses_no_job_and_leaves_none_active(
    own_server: RedisServer,
) -> None:
    app = App(own_server.url(), attempts=5)
    total = 1500

    @app.job(queue="work")
    async def step(ctx: JobContext, n: int) -> int:
        await asyncio.sleep(0.005)
        return n

    await app.queue("work").add_bulk({"name": "step", "data": {"n": n}} for n in range(total))
    worker = app.worker(
        ["work"], 20, lease_s=2.0, stall_check_s=0.3, idle_wait_s=0.2, handle_signals=False
    )
    try:
        async with running(worker):
            await until(lambda: _finished_at_least(app, total // 4), 30, "a quarter done")
            await asyncio.to_thread(own_server.restart, down_s=1.0)
            await until(lambda: _finished_at_least(app, total), 60, "every job finished")
        final = await counts(app, "work")
        assert final["completed"] + final["dead"] == total, final
        assert final["active"] == final["waiting"] == final["delayed"] == 0, final
    finally:
        await app.close()


async def _finished_at_least(app: App, n: int) -> bool:
    try:
        found = await counts(app, "work")
    except Exception:  # the server is restarting
        return False
    return found["completed"] + found["dead"] >= n


@pytest.mark.slow
async def test_jobs_of_a_worker_killed_with_sigkill_are_recovered_within_lease_and_check(
    backend_url: str, queue_name: str
) -> None:
    lease_s, check_s = 2.0, 0.2
    app = App(backend_url)

    @app.job(queue=queue_name)
    async def hold(ctx: JobContext, seconds: float) -> None:
        return None  # the survivor finishes at once

    jobs = await app.queue(queue_name).add_bulk(
        {"name": "hold", "data": {"seconds": 60}} for _ in range(5)
    )
    doomed = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "worker_proc.py"),
            backend_url,
            queue_name,
            "--lease-s",
            str(lease_s),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "ready"

        async def all_active() -> bool:
            return (await counts(app, queue_name))["active"] == 5

        await until(all_active, 10, "the doomed worker to take every job")
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
        killed_at = time.monotonic()
        survivor = app.worker(
            [queue_name],
            5,
            lease_s=lease_s,
            stall_check_s=check_s,
            idle_wait_s=0.2,
            handle_signals=False,
        )
        async with running(survivor):

            async def all_completed() -> bool:
                return (await counts(app, queue_name))["completed"] == 5

            await until(all_completed, 15, "the survivor to finish the killed worker's jobs")
        took = time.monotonic() - killed_at
        # a lease lasts lease_s; the survivor looks every check_s (+/- 20 % jitter)
        assert took < lease_s + check_s * 1.2 + 1.5, f"recovery took {took:.2f} s"
        for job in jobs:
            record = await job.refresh()
            assert record.state is JobState.COMPLETED
            assert [e.error_type for e in record.errors] == ["Stalled"]
            assert record.stalls == 1
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
        await app.close()


def used_memory(server: RedisServer) -> int:
    with server.client() as client:
        return int(client.info("memory")["used_memory"])


@pytest.mark.slow
async def test_100k_jobs_removed_on_completion_leave_memory_where_it_was(
    own_server: RedisServer,
) -> None:
    # audit=False: the audit trail keeps an entry per enqueue / start / end by design
    # (bounded by its retention); this test measures what the jobs themselves leave.
    app = App(own_server.url(), remove_on_complete=True, audit=False)

    @app.job(queue="bulk")
    async def noop(ctx: JobContext, n: int) -> None:
        return None

    queue = app.queue("bulk")
    worker = app.worker(["bulk"], 100, burst=True, handle_signals=False)
    try:
        await queue.add("noop", {"n": -1})  # warm up: scripts loaded, connections open
        await worker.run()
        before = used_memory(own_server)
        await queue.add_bulk({"name": "noop", "data": {"n": n}} for n in range(100_000))
        peak = used_memory(own_server)
        worker = app.worker(["bulk"], 100, burst=True, handle_signals=False)
        await worker.run()
        after = used_memory(own_server)
        assert worker.processed == 100_000
        assert peak - before > 10 * 2**20, "the jobs did take memory while queued"
        print(f"used_memory: before {before}, peak {peak}, after {after} bytes")
        assert abs(after - before) < 2**20, f"{(after - before) / 2**20:.2f} MiB left behind"
    finally:
        await app.close()


@pytest.mark.slow
async def test_remove_on_complete_n_keeps_exactly_the_newest_n(own_server: RedisServer) -> None:
    app = App(own_server.url(), remove_on_complete=1000)

    @app.job(queue="bulk")
    async def noop(ctx: JobContext, n: int) -> None:
        return None

    try:
        await app.queue("bulk").add_bulk({"name": "noop", "data": {"n": n}} for n in range(10_000))
        worker = app.worker(["bulk"], 50, burst=True, handle_signals=False)
        await worker.run()
        found = await counts(app, "bulk")
        assert found["completed"] == 1000, found
        kept = await app.queue("bulk").jobs("completed", limit=1000)
        assert len({r.id for r in kept}) == 1000
    finally:
        await app.close()
