"""Retry semantics end to end: App + burst worker on each backend, real (short) delays.

These check what the worker decides (backoff schedule, ``should_retry``,
``UnrecoverableError``, ``Retry(delay=)``) lands in the backend the same way everywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shigoto import App, Backoff, Event, JobRecord, JobState, Retry, UnrecoverableError

WORKER_SETTINGS: dict[str, Any] = {
    "burst": True,
    "lease_s": 5.0,
    "stall_check_s": 1.0,
    "idle_wait_s": 0.02,
    "handle_signals": False,
}
TOLERANCE_S = 0.01
"""Slack for millisecond rounding between the worker's clock and the backend's."""


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[App]:
    instance = App(backend_url)
    try:
        yield instance
    finally:
        await instance.close()


class Recorder:
    """Collects ``retrying`` / ``dead`` events and when each attempt started."""

    def __init__(self, app: App) -> None:
        self.retrying: list[Event] = []
        self.dead: list[Event] = []
        self.starts: list[float] = []
        app.on("retrying", self.retrying.append)
        app.on("dead", self.dead.append)

    def attempt_started(self) -> int:
        self.starts.append(time.monotonic())
        return len(self.starts)

    @property
    def delays(self) -> list[float]:
        return [e.detail["delay_s"] for e in self.retrying]

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


async def run_burst(app: App, queue: str) -> None:
    worker = app.worker(queues=[queue], concurrency=2, **WORKER_SETTINGS)
    await asyncio.wait_for(worker.run(), timeout=20)


async def stored(app: App, queue: str, job_id: str) -> JobRecord:
    job = await app.queue(queue).get_job(job_id)
    assert job is not None and job.record is not None
    return job.record


async def test_failed_attempts_are_retried_on_a_fixed_backoff_schedule(
    app: App, queue_name: str
) -> None:
    events = Recorder(app)

    @app.job(queue=queue_name, attempts=3, backoff=Backoff.fixed(0.05))
    async def flaky(ctx: Any) -> str:
        if events.attempt_started() < 3:
            raise ConnectionError("refused")
        return "finally"

    job = await flaky.enqueue()
    await run_burst(app, queue_name)

    record = await stored(app, queue_name, job.id)
    assert record.state is JobState.COMPLETED
    assert record.result_value == "finally"
    assert record.attempts == 3
    assert [e.error_type for e in record.errors] == ["ConnectionError"] * 2
    assert events.delays == [0.05, 0.05]
    assert [e.attempt for e in events.retrying] == [1, 2]
    assert all(gap >= 0.05 - TOLERANCE_S for gap in events.gaps), events.gaps


async def test_exponential_backoff_doubles_up_to_its_cap_then_the_job_goes_dead(
    app: App, queue_name: str
) -> None:
    events = Recorder(app)

    @app.job(queue=queue_name, attempts=4, backoff=Backoff.exponential(0.04, max_delay=0.1))
    async def always_fails(ctx: Any) -> None:
        events.attempt_started()
        raise TimeoutError("upstream slow")

    job = await always_fails.enqueue()
    await run_burst(app, queue_name)

    assert events.delays == pytest.approx([0.04, 0.08, 0.1])
    for gap, delay in zip(events.gaps, events.delays, strict=True):
        assert gap >= delay - TOLERANCE_S, (events.gaps, events.delays)
    record = await stored(app, queue_name, job.id)
    assert record.state is JobState.DEAD
    assert record.reason == "retries_exhausted"
    assert record.attempts == 4
    assert len(record.errors) == 4
    assert [e.detail["reason"] for e in events.dead] == ["retries_exhausted"]


async def test_should_retry_returning_false_sends_the_job_dead_at_once(
    app: App, queue_name: str
) -> None:
    events = Recorder(app)
    seen: list[tuple[str, int]] = []

    def never(error: BaseException, attempts_made: int) -> bool:
        seen.append((type(error).__name__, attempts_made))
        return False

    @app.job(queue=queue_name, attempts=5, backoff=Backoff.fixed(0.01), should_retry=never)
    async def business_error(ctx: Any) -> None:
        events.attempt_started()
        raise KeyError("no such customer")

    job = await business_error.enqueue()
    await run_burst(app, queue_name)

    record = await stored(app, queue_name, job.id)
    assert record.state is JobState.DEAD
    assert record.reason == "should_retry_declined"
    assert record.attempts == 1
    assert seen == [("KeyError", 1)]
    assert events.retrying == []


async def test_should_retry_returning_true_retries_beyond_the_attempts_limit(
    app: App, queue_name: str
) -> None:
    events = Recorder(app)

    def up_to_four(error: BaseException, attempts_made: int) -> bool | None:
        return True if attempts_made < 4 else None  # then defer to `attempts`

    @app.job(queue=queue_name, attempts=1, backoff=Backoff.fixed(0.01), should_retry=up_to_four)
    async def connection_refused(ctx: Any) -> None:
        events.attempt_started()
        raise ConnectionRefusedError("refused")

    job = await connection_refused.enqueue()
    await run_burst(app, queue_name)

    record = await stored(app, queue_name, job.id)
    assert len(events.starts) == 4
    assert record.state is JobState.DEAD
    assert record.reason == "retries_exhausted"
    assert record.attempts == 4
    assert len(events.retrying) == 3


async def test_an_unrecoverable_error_goes_dead_without_a_retry(app: App, queue_name: str) -> None:
    events = Recorder(app)

    @app.job(queue=queue_name, attempts=5, backoff=Backoff.fixed(0.01))
    async def invalid_input(ctx: Any) -> None:
        events.attempt_started()
        raise UnrecoverableError("email address is malformed")

    job = await invalid_input.enqueue()
    await run_burst(app, queue_name)

    record = await stored(app, queue_name, job.id)
    assert record.state is JobState.DEAD
    assert record.reason == "unrecoverable"
    assert record.attempts == 1
    assert len(events.starts) == 1
    assert events.retrying == []
    assert record.last_error is not None
    assert record.last_error.message == "email address is malformed"
    assert "UnrecoverableError" in record.last_error.error_type


async def test_a_handler_raising_retry_with_a_delay_runs_again_after_that_delay(
    app: App, queue_name: str
) -> None:
    events = Recorder(app)

    @app.job(queue=queue_name, attempts=3, backoff=Backoff.fixed(5))
    async def rate_limited(ctx: Any) -> int:
        if events.attempt_started() == 1:
            raise Retry(delay=0.08, message="429 from the API")
        return int(ctx.attempt)

    job = await rate_limited.enqueue()
    await run_burst(app, queue_name)

    record = await stored(app, queue_name, job.id)
    assert record.state is JobState.COMPLETED
    assert record.result_value == 2
    assert events.delays == [pytest.approx(0.08)]
    assert events.gaps[0] >= 0.08 - TOLERANCE_S
    [error] = record.errors
    assert error.message == "429 from the API"
    assert error.error_type.endswith("Retry")


async def test_retry_without_attempts_left_goes_dead(app: App, queue_name: str) -> None:
    @app.job(queue=queue_name, attempts=2, backoff=Backoff.fixed(0.01))
    async def keeps_asking(ctx: Any) -> None:
        raise Retry(delay=0.01)

    job = await keeps_asking.enqueue()
    await run_burst(app, queue_name)

    record = await stored(app, queue_name, job.id)
    assert record.state is JobState.DEAD
    assert record.reason == "retries_exhausted"
    assert record.attempts == 2


async def test_a_sync_handler_follows_the_same_retry_rules(app: App, queue_name: str) -> None:
    calls: list[int] = []

    @app.job(queue=queue_name, attempts=2, backoff=Backoff.fixed(0.01))
    def plain(ctx: Any, n: int) -> int:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first time fails")
        return n * 2

    job = await plain.enqueue(n=21)
    await run_burst(app, queue_name)

    record = await stored(app, queue_name, job.id)
    assert (record.state, record.result_value) == (JobState.COMPLETED, 42)
    assert calls == [1, 2]
