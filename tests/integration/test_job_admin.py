"""``queue.remove`` / ``queue.promote`` as an application calls them: a running worker
picks a promoted job up at once, bad input fails clearly, and both are audited."""

from __future__ import annotations

import asyncio

import pytest

from shigoto import App, JobContext
from shigoto.errors import ConfigurationError
from shigoto.testing import running_worker, wait_for

from ._support import FAST


async def test_an_idle_worker_runs_a_promoted_job_at_once(app: App) -> None:
    ran: list[str] = []

    @app.job(queue="reports")
    async def report(ctx: JobContext, name: str) -> None:
        ran.append(name)

    queue = app.queue("reports")
    later = await report.enqueue(name="later", delay=3600)
    settings = {**FAST, "idle_wait_s": 30.0}  # a sleeping worker must be woken
    async with running_worker(app, "reports", concurrency=1, **settings):
        await asyncio.sleep(0.3)  # the worker found nothing due and sleeps
        assert await queue.promote(later.id) is True
        await wait_for(lambda: ran == ["later"], timeout=5, message="the promoted job ran")
    assert await queue.promote(later.id) is False  # completed now


async def test_remove_and_promote_are_audited_and_validate_their_input(app: App) -> None:
    queue = app.queue("reports")
    waiting = await queue.add("report", {})
    delayed = await queue.add("report", {}, delay=60)

    with app.actor("carol"):
        assert await queue.promote(delayed.id) is True
        assert await queue.remove(waiting.id) is True
        assert await queue.remove(waiting.id) is False  # not audited: nothing happened

    entries = await app.audit.query(actor="carol")
    assert sorted((e.action, e.job_id) for e in entries) == [
        ("promote", delayed.id),
        ("remove", waiting.id),
    ]
    for bad in ("", None, 7, "x" * 10_000):
        with pytest.raises(ConfigurationError, match="job_id"):
            await queue.remove(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="job_id"):
            await queue.promote(bad)  # type: ignore[arg-type]
    assert await queue.counts() == {**await queue.counts(), "waiting": 1, "delayed": 0}
