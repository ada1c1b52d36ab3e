"""Rate limits over RabbitMQ with a record store: the store's claim enforces them, and
an idle worker waits for the next slot the store reported, not for a broker delivery
(none comes for a held job) nor for its next poll.

Every worker here polls the store only every 5 s (``idle_wait_s``), so a job that
starts on time was started by the wait the limits asked for."""

from __future__ import annotations

import asyncio
import time

from shigoto import App, JobContext
from shigoto.testing import running_worker, wait_for

SLOW_POLL = {"idle_wait_s": 5.0, "lease_s": 30}


def since(starts: list[float], first: float) -> list[float]:
    return [round(t - first, 2) for t in starts]


async def test_a_rate_limited_queue_starts_its_next_jobs_when_the_window_slides(
    backend_url: str, queue_name: str
) -> None:
    app = App(backend_url, audit=False)
    starts: list[float] = []

    @app.job(queue=queue_name)
    async def call(ctx: JobContext, n: int) -> None:
        starts.append(time.monotonic())

    try:
        await app.queue(queue_name).set_limits(rate_limit="5/s")
        await app.queue(queue_name).add_bulk({"name": "call", "data": {"n": n}} for n in range(12))
        async with running_worker(app, [queue_name], concurrency=10, **SLOW_POLL):
            await wait_for(lambda: len(starts) == 12, timeout=10)
        offsets = since(starts, starts[0])
        # 5 at once, 5 when the first five leave the window, the last 2 a second later
        assert max(offsets[:5]) < 0.3, offsets
        assert all(0.95 <= t <= 1.4 for t in offsets[5:10]), offsets
        assert all(1.95 <= t <= 2.4 for t in offsets[10:]), offsets
    finally:
        await app.close()


async def test_a_group_over_its_limit_runs_again_at_its_next_slot(
    backend_url: str, queue_name: str
) -> None:
    """The store parks a noisy group's jobs as delayed until its slot: no delivery will
    wake anyone for them, so the wait must end when the store says they are due."""
    app = App(backend_url, audit=False)
    starts: dict[str, list[float]] = {"noisy": [], "quiet": []}

    @app.job(queue=queue_name, rate_limit_key=lambda data: data["tenant"])
    async def call(ctx: JobContext, tenant: str) -> None:
        starts[tenant].append(time.monotonic())

    try:
        await app.queue(queue_name).set_limits(group_rate_limit="3/s")
        jobs = [{"name": "call", "data": {"tenant": "noisy"}} for _ in range(6)]
        jobs.append({"name": "call", "data": {"tenant": "quiet"}})
        await app.queue(queue_name).add_bulk(jobs)
        async with running_worker(app, [queue_name], concurrency=10, **SLOW_POLL):
            await wait_for(lambda: len(starts["noisy"]) == 6 and starts["quiet"], timeout=10)
        first = starts["noisy"][0]
        noisy, quiet = since(starts["noisy"], first), since(starts["quiet"], first)
        assert max(noisy[:3]) < 0.3 and quiet[0] < 0.3, (noisy, quiet)
        assert all(0.95 <= t <= 1.4 for t in noisy[3:]), noisy
    finally:
        await app.close()


async def test_a_held_queue_does_not_keep_the_worker_from_another_queues_jobs(
    backend_url: str, queue_name: str
) -> None:
    """One worker on two queues: while the first waits for its slot, a job added to the
    second starts at once (its delivery wakes the worker), and the first still gets its
    slot on time."""
    app = App(backend_url, audit=False)
    held, free = f"{queue_name}-held", f"{queue_name}-free"
    starts: list[tuple[str, float]] = []

    @app.job(queue=held)
    async def slow_lane(ctx: JobContext) -> None:
        starts.append(("held", time.monotonic()))

    @app.job(queue=free)
    async def fast_lane(ctx: JobContext) -> None:
        starts.append(("free", time.monotonic()))

    try:
        await app.queue(held).set_limits(rate_limit="1/2s")
        await slow_lane.enqueue()
        await slow_lane.enqueue()
        async with running_worker(app, [held, free], concurrency=4, **SLOW_POLL):
            await wait_for(lambda: len(starts) == 1, timeout=10)
            await asyncio.sleep(0.3)  # the worker now waits: held for ~1.7 s more
            added = time.monotonic()
            await fast_lane.enqueue()
            await wait_for(lambda: len(starts) == 3, timeout=10)
        first = starts[0][1]
        (_, fast_at) = next(s for s in starts if s[0] == "free")
        (_, second_held_at) = [s for s in starts if s[0] == "held"][1]
        assert fast_at - added < 0.3, fast_at - added
        assert 1.95 <= second_held_at - first <= 2.4, second_held_at - first
    finally:
        await app.close()
