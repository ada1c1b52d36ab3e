"""Batches end to end: chunk jobs run by real workers, one follow-up job exactly once.

The in-process tests run a worker task on each backend; the race and the crash run
real worker processes: two workers finishing the last two chunks at the same instant,
and a worker killed (``os._exit``) right after it completed the last chunk and before it
could report it, whose batch is then finished by another worker's sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shigoto import App, UnrecoverableError
from shigoto.batches import Batch
from shigoto.errors import ConfigurationError
from shigoto.job import JobState
from shigoto.testing import run_until_empty

from ._support import FAST


@contextlib.asynccontextmanager
async def running(app: App, queue: str, concurrency: int = 4) -> AsyncIterator[None]:
    worker = app.worker([queue], concurrency=concurrency, **FAST)
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def test_chunks_carry_their_place_and_the_follow_up_runs_once(
    app: App, queue_name: str
) -> None:
    seen: list[tuple[list[int], int, int, str, Any]] = []
    follow_ups: list[dict[str, Any]] = []

    @app.job(queue=queue_name)
    async def square(
        ctx: Any, items: list[int], chunk_index: int, total_chunks: int, batch_id: str
    ) -> int:
        assert ctx.batch is not None
        seen.append((items, chunk_index, total_chunks, batch_id, ctx.batch.chunk_index))
        await ctx.update_progress(50)
        return sum(items)

    @app.job(queue=queue_name)
    async def report(ctx: Any, label: str) -> None:
        info = await ctx.batch.info()
        follow_ups.append({"label": label, "done": info.done, "batch": ctx.batch.id})

    queue = app.queue(queue_name)
    batch = await queue.add_chunks(
        "square", list(range(250)), chunk_size=100, on_complete=("report", {"label": "x"})
    )
    assert isinstance(batch, Batch)
    assert (batch.total_chunks, batch.total_items, batch.status) == (3, 250, "running")
    assert await batch.progress() == 0.0

    async with running(app, queue_name):
        await batch.wait_until_finished(timeout=20)
        follow = await batch.follow_up()
        assert follow is not None
        await follow.wait_until_finished(timeout=20)

    assert sorted((s[1], len(s[0]), s[2], s[3], s[4]) for s in seen) == [
        (0, 100, 3, batch.id, 0),
        (1, 100, 3, batch.id, 1),
        (2, 50, 3, batch.id, 2),
    ]
    assert sorted(x for s in seen for x in s[0]) == list(range(250))
    assert follow_ups == [{"label": "x", "done": 3, "batch": batch.id}]
    assert (batch.done, batch.dead, batch.failed, batch.outcome) == (3, 0, 0, "completed")
    assert batch.follow_up_id == f"{batch.id}:follow-up"
    assert await batch.progress() == 100.0
    [listed] = await queue.batches()
    assert listed.id == batch.id and listed.finished


async def test_combined_progress_counts_running_chunks_by_their_own_progress(
    app: App, queue_name: str
) -> None:
    release = asyncio.Event()

    @app.job(queue=queue_name)
    async def slow(ctx: Any, items: list[int], **_: Any) -> None:
        await ctx.update_progress(50)
        await release.wait()

    queue = app.queue(queue_name)
    batch = await queue.add_chunks("slow", range(4), chunk_size=1)
    async with running(app, queue_name, concurrency=2):
        for _ in range(200):
            if await batch.progress() == 25.0:  # two of four chunks at 50 %
                break
            await asyncio.sleep(0.02)
        assert await batch.progress() == 25.0
        release.set()
        await batch.wait_until_finished(timeout=20)
    assert await batch.progress() == 100.0


@pytest.mark.parametrize(
    ("policy", "on_failure", "expected", "outcome"),
    [
        ("run", None, "after", "completed_with_failures"),
        ("skip", None, None, "failed"),
        ("run", ("rescue", {}), "rescue", "failed"),
    ],
)
async def test_dead_chunks_follow_the_policy(
    app: App,
    queue_name: str,
    policy: Any,
    on_failure: Any,
    expected: str | None,
    outcome: str,
) -> None:
    ran: list[tuple[str, list[int]]] = []

    @app.job(queue=queue_name)
    async def picky(ctx: Any, items: list[int], **_: Any) -> None:
        if 3 in items:
            raise UnrecoverableError("three is not allowed")

    @app.job(queue=queue_name)
    async def after(ctx: Any) -> None:
        ran.append(("after", (await ctx.batch.info()).failed_chunks))

    @app.job(queue=queue_name)
    async def rescue(ctx: Any) -> None:
        ran.append(("rescue", (await ctx.batch.info()).failed_chunks))

    batch = await app.queue(queue_name).add_chunks(
        "picky",
        range(6),
        chunk_size=2,
        on_complete=("after", None),
        on_failure=on_failure,
        dead_chunks=policy,
    )
    async with running(app, queue_name):
        await batch.wait_until_finished(timeout=20)
        follow = await batch.follow_up()
        if follow is not None:
            await follow.wait_until_finished(timeout=20)

    assert (batch.done, batch.dead, batch.failed_chunks, batch.outcome) == (2, 1, [1], outcome)
    assert ran == ([] if expected is None else [(expected, [1])])


async def test_cancelling_a_batch_cancels_pending_chunks_and_flags_running_ones(
    app: App, queue_name: str
) -> None:
    started = asyncio.Event()
    flags: list[bool] = []

    @app.job(queue=queue_name)
    async def long(ctx: Any, items: list[int], **_: Any) -> None:
        started.set()
        for _ in range(400):
            if ctx.cancelled:
                flags.append(True)
                ctx.raise_if_cancelled()
            await asyncio.sleep(0.01)

    @app.job(queue=queue_name)
    async def after(ctx: Any) -> None:
        raise AssertionError("a cancelled batch runs no follow-up")

    queue = app.queue(queue_name)
    batch = await queue.add_chunks("long", range(5), chunk_size=1, on_complete="after")
    async with running(app, queue_name, concurrency=1):
        await asyncio.wait_for(started.wait(), 10)
        await batch.cancel()
        await batch.wait_until_finished(timeout=20)

    assert flags == [True]
    assert (batch.cancelled, batch.outcome, batch.follow_up_id) == (5, "cancelled", None)
    assert (await queue.counts())["cancelled"] == 5


async def test_a_generator_of_items_is_streamed_with_progress(app: App, queue_name: str) -> None:
    progress: list[tuple[int, int]] = []
    batch = await app.queue(queue_name).add_chunks(
        "noop",
        (i for i in range(25_000)),
        chunk_size=100,
        on_progress=lambda items, chunks: progress.append((items, chunks)),
    )
    assert (batch.total_chunks, batch.total_items) == (250, 25_000)
    assert progress == [(10_000, 100), (20_000, 200), (25_000, 250)]
    job = await app.queue(queue_name).get_job(f"{batch.id}:249")
    assert job is not None and job.record is not None
    assert job.record.data["total_chunks"] is None  # unknown length, no total_items
    assert len(job.record.data["items"]) == 100


async def test_add_bulk_reports_progress_and_can_skip_handles(app: App, queue_name: str) -> None:
    seen: list[int] = []
    jobs = ({"name": "noop", "data": {"i": i}} for i in range(2500))
    out = await app.queue(queue_name).add_bulk(jobs, on_progress=seen.append, return_jobs=False)
    assert out == [] and seen == [1000, 2000, 2500]
    assert (await app.queue(queue_name).counts())["waiting"] == 2500


async def test_bad_arguments_fail_before_anything_is_stored(app: App, queue_name: str) -> None:
    queue = app.queue(queue_name)
    bad: list[dict[str, Any]] = [
        {"chunk_size": 0},
        {"chunk_size": True},
        {"dead_chunks": "maybe"},
        {"on_complete": ("after",)},
        {"on_failure": 42},
        {"priority": "high"},
        {"nonsense": 1},
    ]
    for kwargs in bad:
        with pytest.raises(ConfigurationError):
            await queue.add_chunks("chunk", [1, 2], **kwargs)
    with pytest.raises(ConfigurationError, match="iterable of items"):
        await queue.add_chunks("chunk", "abc")
    assert await queue.batches() == []
    assert await queue.get_batch("batch-" + "0" * 24) is None


def test_the_blocking_twins_work_from_sync_code(app: App, queue_name: str) -> None:
    seen: list[tuple[int | None, int]] = []

    @app.job(queue=queue_name)
    def count(ctx: Any, items: list[int], **_: Any) -> None:  # a plain def handler
        seen.append((ctx.batch.chunk_index, ctx.batch.info_sync().total_chunks))

    queue = app.queue(queue_name)
    batch = queue.add_chunks_sync("count", [1, 2, 3], chunk_size=2)

    async def drain() -> None:
        async with running(app, queue_name):
            await batch.wait_until_finished(timeout=20)

    app.portal.call(drain)
    assert sorted(seen) == [(0, 2), (1, 2)]
    assert batch.wait_until_finished_sync(timeout=1).done == 2
    assert queue.get_batch_sync(batch.id) is not None


async def test_run_until_empty_also_runs_the_follow_up(app: App, queue_name: str) -> None:
    ran: list[str] = []

    @app.job(queue=queue_name)
    async def part(ctx: Any, items: list[int], **_: Any) -> None:
        return None

    @app.job(queue=queue_name)
    async def after(ctx: Any) -> None:
        ran.append(ctx.batch.id)

    for _ in range(3):
        batch = await app.queue(queue_name).add_chunks(
            "part", range(10), chunk_size=5, on_complete="after"
        )
        await run_until_empty(app, queue_name, concurrency=4)
        assert ran[-1] == batch.id
    assert len(ran) == 3


# -- real worker processes -----------------------------------------------------------

APP = textwrap.dedent(
    """
    import asyncio, os, sys, time

    from shigoto import App

    app = App(os.environ["B_URL"])
    QUEUE = os.environ["B_QUEUE"]
    LOG = os.environ["B_LOG"]

    @app.job(queue=QUEUE)
    async def chunk(ctx, items, chunk_index, total_chunks, batch_id):
        if os.environ.get("B_BARRIER"):
            # the two chunks of a batch meet here, then finish at the same instant
            here = os.path.join(os.path.dirname(LOG), f"{batch_id}-{chunk_index}")
            with open(here, "w") as mark:
                mark.write(ctx.worker_id)
            others = [os.path.join(os.path.dirname(LOG), f"{batch_id}-{i}")
                      for i in range(total_chunks)]
            while not all(os.path.exists(o) for o in others):
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.1 - time.time() % 0.1)
        return chunk_index

    @app.job(queue=QUEUE)
    async def after(ctx, tag):
        with open(LOG, "a") as log:
            log.write(f"{ctx.batch.id} {tag}\\n")

    if os.environ.get("B_DIE_AFTER_COMPLETE"):
        import shigoto.batches as batches

        async def die(self, backend, finished):
            if any(batches.chunk_of(job_id) for _, job_id, _ in finished):
                os._exit(9)  # the completion is stored; the report never happens

        async def no_sweep(self, backend, queue):
            pass  # nor does its own sweep count the chunk: only the healthy worker's does

        batches.BatchTracker.report = die
        batches.BatchTracker.sweep = no_sweep

    async def main() -> None:
        concurrency = int(os.environ.get("B_CONCURRENCY", "2"))
        await app.worker([QUEUE], concurrency=concurrency, lease_s=1.0, heartbeat_s=0.2,
                         stall_check_s=0.1, idle_wait_s=0.02).run()
        await app.close()

    asyncio.run(main())
    """
)


@pytest.fixture
def proc_env(backend_url: str, queue_name: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "batch_app.py").write_text(APP)
    src = str(Path(__file__).resolve().parents[2] / "src")
    yield {
        **os.environ,
        "B_URL": backend_url,
        "B_QUEUE": queue_name,
        "B_LOG": str(tmp_path / "follow_ups.log"),
        "PYTHONPATH": src,
    }


def spawn(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "batch_app.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    return err


def follow_up_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_two_workers_finishing_the_last_chunks_at_once_run_one_follow_up(
    app: App, queue_name: str, proc_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**proc_env, "B_BARRIER": "1", "B_CONCURRENCY": "1"}
    workers = [spawn(tmp_path, env) for _ in range(2)]
    log = tmp_path / "follow_ups.log"
    try:
        queue = app.queue(queue_name)
        batches = []
        for n in range(5):
            batch = await queue.add_chunks(
                "chunk", [1, 2], chunk_size=1, on_complete=("after", {"tag": n})
            )
            await batch.wait_until_finished(timeout=30)
            batches.append(batch)
        await wait_for(lambda: len(follow_up_lines(log)) >= 5, 30)
        await asyncio.sleep(0.5)  # a duplicate would show up here
    finally:
        errors = [stop(w) for w in workers]
    lines = sorted(follow_up_lines(log))
    assert lines == sorted(f"{b.id} {n}" for n, b in enumerate(batches)), errors
    for batch in batches:
        assert (batch.done, batch.outcome) == (2, "completed")
        ran_on = {(tmp_path / f"{batch.id}-{i}").read_text() for i in range(2)}
        assert len(ran_on) == 2, "the two chunks ran on different workers"


@pytest.mark.slow
async def test_a_worker_killed_after_completing_the_last_chunk_still_gets_one_follow_up(
    app: App, queue_name: str, proc_env: dict[str, str], tmp_path: Path
) -> None:
    queue = app.queue(queue_name)
    batch = await queue.add_chunks(
        "chunk", [1, 2, 3], chunk_size=3, on_complete=("after", {"tag": "t"})
    )
    dying = spawn(tmp_path, {**proc_env, "B_DIE_AFTER_COMPLETE": "1"})
    dying.wait(timeout=30)
    assert dying.returncode == 9, dying.communicate()[1][-3000:]
    counts = await queue.counts()
    assert counts["completed"] == 1  # the only chunk: stored, then the process died
    await batch.refresh()
    assert batch.done == 0 and not batch.finished

    healthy = spawn(tmp_path, proc_env)
    log = tmp_path / "follow_ups.log"
    try:
        await batch.wait_until_finished(timeout=30)
        await wait_for(lambda: len(follow_up_lines(log)) >= 1, 30)
        await asyncio.sleep(0.5)
    finally:
        err = stop(healthy)
    assert follow_up_lines(log) == [f"{batch.id} t"], err[-3000:]
    assert (batch.done, batch.outcome) == (1, "completed")
    follow = await queue.get_job(f"{batch.id}:follow-up")
    assert follow is not None and follow.record is not None
    assert follow.record.state is JobState.COMPLETED
