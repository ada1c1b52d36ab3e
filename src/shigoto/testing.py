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

``drain`` runs every job that is due *now* by the app's clock and re-raises what the
handlers raised (as :class:`JobErrors`); with a :class:`~shigoto.FrozenClock`, delays,
retries and cron ticks are tested by ``clock.advance(...)`` and another ``drain`` /
``fire_schedules``, without sleeping. ``isolated`` points an existing app at a fresh
database for one test. The pytest plugin (:mod:`shigoto.pytest_plugin`, registered by
entry point) wraps these in fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .clock import Clock
from .events import Event
from .job import JobRecord, JobState

if TYPE_CHECKING:
    from .app import App
    from .scheduler import Fired
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


# -- drain: run what is due, re-raise what failed ---------------------------------------

DRAIN_POLL_S = 0.01


class JobErrors(AssertionError):
    """Handlers raised while :func:`drain` ran: one line per failed attempt (job name,
    id, attempt, error type and message), then the handler tracebacks.

    ``events`` holds the ``failed`` events (each ``detail["error"]`` is the recorded
    :class:`~shigoto.job.AttemptError`). An ``AssertionError``, so pytest reports it as
    a test failure with the handler's traceback in the message.
    """

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        lines = [f"{len(events)} job attempt(s) failed while draining:"]
        tracebacks = []
        for event in events:
            error = event.detail.get("error")
            kind = getattr(error, "error_type", "?")
            message = getattr(error, "message", "")
            lines.append(
                f"  job {event.name!r} id={event.job_id} attempt {event.attempt}: {kind}: {message}"
            )
            tracebacks.append(getattr(error, "traceback", ""))
        lines.append("(drain(app, raise_errors=False) lets a test expect failures)")
        super().__init__("\n".join([*lines, "", *tracebacks]))


async def drain(
    app: App,
    queues: Sequence[str] | str | None = None,
    *,
    raise_errors: bool = True,
    concurrency: int = 10,
    timeout: float | None = 30.0,
    **settings: Any,
) -> Worker:
    """Run jobs until no job of ``queues`` is waiting, running, or delayed and due by
    ``app.clock``; then stop the worker and return it.

    Unlike :func:`run_until_empty`, a job delayed into the future (``delay=``, a retry
    backoff) is left alone: advance a :class:`~shigoto.FrozenClock` and drain again. With
    ``raise_errors`` (the default), any attempt that raised makes ``drain`` raise
    :class:`JobErrors` naming each job and error, after the worker stopped. Raises
    ``TimeoutError`` after ``timeout`` seconds.
    """
    failures: list[Event] = []
    worker: Worker = app.worker(queues, concurrency, **_settings(settings))
    worker.on("failed", failures.append)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while not await _settled(app, worker):
                if task.done():
                    break
                await asyncio.sleep(DRAIN_POLL_S)
    except TimeoutError:
        worker.stop(now=True)
        await task
        raise
    if not task.done():
        worker.stop()
    await task
    if raise_errors and failures:
        raise JobErrors(failures)
    return worker


async def _settled(app: App, worker: Worker) -> bool:
    """Nothing left that a worker could run now (and the worker holds nothing)."""
    if worker._running or worker._acks:
        return False
    now = app.clock.now_ms()
    for name in worker.queues:
        queue = app.queue(name)
        counts = await queue.counts()
        if counts[JobState.ACTIVE.value]:
            return False
        if counts[JobState.WAITING.value] and not await queue.is_paused():
            return False
        if counts[JobState.DELAYED.value]:
            delayed = await queue.jobs(JobState.DELAYED, limit=10_000)
            if any(record.ready_ms <= now for record in delayed):
                return False
    return not (worker._running or worker._acks)


async def fire_schedules(app: App) -> list[Fired]:
    """Fire every cron / interval tick due by ``app.clock`` (enqueue their jobs) and
    return them: one scheduler pass, as ``shigoto scheduler`` would run it."""
    return await app.scheduler(handle_signals=False).tick()


# -- isolating an app you already have --------------------------------------------------


@contextmanager
def isolated(app: App, url: str, *, clock: Clock | None = None) -> Iterator[App]:
    """Point ``app`` (yours, with its handlers) at ``url`` (and ``clock``) for the
    block, then restore it. Backends the block opened are closed on the way out.
    """
    saved = (app.url, app.clock, app._backends, app.portal)
    from .portal import Portal

    app.url = url
    if clock is not None:
        app.clock = clock
    app._backends = type(saved[2])()
    app.portal = Portal()
    try:
        yield app
    finally:
        close_quietly(app)
        app.url, app.clock, app._backends, app.portal = saved


def close_quietly(app: App) -> None:
    """Close what ``app`` opened outside a running loop (test teardown)."""
    with contextlib.suppress(Exception):
        app.close_sync()
    for loop, backend in list(app._backends.items()):
        try:
            if loop.is_closed():
                asyncio.run(backend.close())
            elif not loop.is_running():
                loop.run_until_complete(backend.close())
        except Exception:  # pragma: no cover - best effort at teardown
            pass
    app._backends.clear()
