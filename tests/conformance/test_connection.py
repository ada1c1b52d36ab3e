"""Connecting, reconnecting and what a backend declares about itself."""

from __future__ import annotations

import asyncio
import time

import pytest

from shigoto.backends import Backend, Capabilities, open_backend
from shigoto.job import JobState

from .support import LEASE_MS, T0, claim_one, completion, enqueue, lease_of, new_job, record


async def test_a_backend_declares_its_capabilities(backend: Backend) -> None:
    capabilities = backend.capabilities

    assert isinstance(capabilities, Capabilities)
    assert capabilities.name
    assert not capabilities.multi_host or capabilities.multi_process


async def test_connect_is_idempotent(backend: Backend, queue_name: str) -> None:
    await backend.connect()
    await backend.connect()

    await enqueue(backend, new_job(queue_name, "j1"))
    assert (await record(backend, queue_name, "j1")).state is JobState.WAITING


async def test_jobs_and_leases_survive_a_reconnect_when_the_backend_is_durable(
    backend_url: str, queue_name: str
) -> None:
    first = open_backend(backend_url)
    if not first.capabilities.durable:
        pytest.skip(f"{first.capabilities.name} declares durable=False")
    await first.connect()
    try:
        await enqueue(first, new_job(queue_name, "running"), new_job(queue_name, "queued"))
        claimed = await claim_one(first, queue_name)
    finally:
        await first.close()

    second = open_backend(backend_url)
    await second.connect()
    try:
        assert (await record(second, queue_name, "queued")).state is JobState.WAITING
        [status] = await second.extend([lease_of(claimed)], lease_ms=LEASE_MS, now_ms=T0 + 1)
        assert status.held
        assert await second.complete([completion(claimed, "done")], T0 + 2) == [True]
        assert (await record(second, queue_name, "running")).result_value == "done"
    finally:
        await second.close()


async def test_a_wait_is_ended_by_an_enqueue_through_another_connection(
    backend_url: str, queue_name: str
) -> None:
    waiter, producer = open_backend(backend_url), open_backend(backend_url)
    await waiter.connect()
    await producer.connect()
    try:
        # A backend without blocking waits polls, so it may return before the enqueue;
        # either way the wait must end well before its timeout once a job is there.
        task = asyncio.create_task(waiter.wait_for_work([queue_name], 10.0))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await enqueue(producer, new_job(queue_name, "wake"))
        await asyncio.wait_for(task, timeout=5.0)
        limit_s = 1.0 if waiter.capabilities.blocking_wait else 5.0
        assert time.monotonic() - started < limit_s
        assert [
            c.record.id
            for c in await waiter.claim(
                queue_name, limit=1, worker_id="w", lease_ms=LEASE_MS, now_ms=T0
            )
        ] == ["wake"]
    finally:
        await waiter.close()
        await producer.close()
