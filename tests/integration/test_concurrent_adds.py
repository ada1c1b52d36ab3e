"""Adds made at the same time from many tasks (a web app's requests) are written
together, and each behaves as if made alone: its own job, id, dedup answer, audit."""

from __future__ import annotations

import asyncio

from shigoto import App


async def test_concurrent_adds_each_get_their_own_job_in_order(app: App) -> None:
    queue = app.queue("web")
    await app.backend()  # connected: no add waits for the connection, so they queue in order

    jobs = await asyncio.gather(*(queue.add("task", {"n": n}) for n in range(200)))

    assert len({job.id for job in jobs}) == 200 and all(job.created for job in jobs)
    waiting = await queue.jobs("waiting", limit=200)
    assert [record.data["n"] for record in waiting] == list(range(200))  # FIFO kept
    for job in jobs[:3]:
        assert [e.action for e in await app.audit.query(job_id=job.id)] == ["enqueue"]


async def test_concurrent_adds_with_one_dedup_key_create_one_job(app: App) -> None:
    queue = app.queue("web")
    await app.backend()

    jobs = await asyncio.gather(
        *(queue.add("task", {"n": n}, dedup_key="report:7") for n in range(20))
    )

    assert [job.created for job in jobs] == [True] + [False] * 19
    assert {job.id for job in jobs} == {jobs[0].id}
    assert (await queue.counts())["waiting"] == 1
