"""Helpers for testing your own jobs against the real embedded backend, not a mock.

Typical use in a pytest-asyncio test::

    from shigoto.testing import enqueued, run_until_empty

    async def test_welcome_mail(tmp_path):
        app = make_app(f"sqlite:///{tmp_path}/jobs.db")
        job = await send_welcome.enqueue(user_id=1)
        await run_until_empty(app)
        assert await job.wait_until_finished(timeout=1) is None

``run_until_empty`` runs a burst worker (it stops once its queues hold no waiting or
delayed job), ``running_worker`` keeps one running in the background for the length of
a ``with`` block, ``wait_for`` polls a condition, and ``enqueued`` lists what is waiting.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .job import JobRecord, JobState

if TYPE_CHECKING:
    from .app import App
    from .worker import Worker

T = TypeVar("T")

TEST_SETTINGS: dict[str, Any] = {"handle_signals": False, "idle_wait_s": 0.05}
"""Worker settings that suit tests: no signal handlers, short idle waits."""


def _settings(overrides: dict[str, Any]) -> dict[str, Any]:
    return {**TEST_SETTINGS, **overrides}


async def run_until_empty(
    app: App,
    queues: Sequence[str] | str | None = None,
    *,
    concurrency: int = 10,
    timeout: float | None = 30.0,
    **settings: Any,
) -> Worker:
    """Run a worker until ``queues`` hold no waiting or delayed job; return it.

    ``worker.processed`` and ``worker.failed`` then tell what happened. Raises
    ``TimeoutError`` after ``timeout`` seconds (the worker is stopped first).
    """
    worker: Worker = app.worker(queues, concurrency, **_settings({"burst": True, **settings}))
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)
    except TimeoutError:
        worker.stop(now=True)
        await task
        raise
    return worker


def run_until_empty_sync(
    app: App,
    queues: Sequence[str] | str | None = None,
    *,
    concurrency: int = 10,
    timeout: float | None = 30.0,
    **settings: Any,
) -> Worker:
    """Blocking twin of :func:`run_until_empty`, for sync tests (its own event loop)."""

    async def main() -> Worker:
        try:
            return await run_until_empty(
                app, queues, concurrency=concurrency, timeout=timeout, **settings
            )
        finally:
            await app.close()

    return asyncio.run(main())


@asynccontextmanager
async def running_worker(
    app: App,
    queues: Sequence[str] | str | None = None,
    *,
    concurrency: int = 10,
    **settings: Any,
) -> AsyncIterator[Worker]:
    """A worker running in the background while the block runs; stopped gracefully after.

    An exception raised by the worker itself is re-raised when the block exits.
    """
    worker: Worker = app.worker(queues, concurrency, **_settings(settings))
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0)  # let run() start, so that stop() reaches it
    try:
        yield worker
    finally:
        if not task.done():
            worker.stop()
        await task


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return it.

    Raises ``TimeoutError`` naming ``message`` when ``timeout`` seconds pass first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = predicate()
        value: T = await outcome if inspect.isawaitable(outcome) else outcome
        if value:
            return value
        if loop.time() >= deadline:
            raise TimeoutError(f"{message} not met within {timeout} s")
        await asyncio.sleep(interval)


async def enqueued(
    app: App,
    queue: str = "default",
    *,
    name: str | None = None,
    states: Sequence[JobState | str] = (JobState.WAITING, JobState.DELAYED),
    limit: int = 10_000,
) -> list[JobRecord]:
    """Jobs of ``queue`` in ``states`` (default: not yet run), optionally one job name."""
    out: list[JobRecord] = []
    for state in states:
        records = await app.queue(queue).jobs(state, limit=limit)
        out.extend(r for r in records if name is None or r.name == name)
    return out
