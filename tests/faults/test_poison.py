"""Poison input: job records corrupted straight in the backend (raw SQL on the SQLite
file, raw ``HSET`` on the Redis keys), payloads that are too big, too deep or not
UTF-8. The worker must keep serving the healthy jobs around them, and every poisoned
job must end ``dead`` with a reason — never stuck ``active``, never lost.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shigoto import App, JobContext, JobState, PayloadError

from .conftest import fault_url

QUEUE = "poison"
NESTED = b"[" * 100_000 + b"]" * 100_000
INVALID_UTF8 = b'{"n": "\xff\xfe"}'

Corruptor = Callable[[App, str], Awaitable[None]]


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///").split("?", 1)[0]


async def raw_sql(app: App, sql: str, *params: Any) -> None:
    def run() -> None:
        conn = sqlite3.connect(sqlite_path(app.url), timeout=30)
        try:
            with conn:
                assert conn.execute(sql, params).rowcount == 1
        finally:
            conn.close()

    await asyncio.to_thread(run)


async def raw_hset(app: App, part: str, job_id: str, value: bytes) -> None:
    from shigoto.backends.redis import RedisBackend
    from shigoto.backends.redis.records import queue_keys

    backend = await app.backend()
    assert isinstance(backend, RedisBackend)
    import redis.asyncio as aioredis

    settings = backend.settings
    client = aioredis.Redis(host=settings.host, port=settings.port, db=settings.db)
    try:
        key = getattr(queue_keys(backend.prefix, QUEUE), part)
        assert part == "errors" or await client.hexists(key, job_id)
        await client.hset(key, job_id, value)
    finally:
        await client.aclose()


async def redis_payload(app: App, job_id: str, payload: bytes) -> None:
    from shigoto.backends.redis.records import encode_data

    job = await app.queue(QUEUE).get_job(job_id)
    assert job is not None
    record = await job.refresh()
    await raw_hset(app, "data", job_id, encode_data(payload, record.options))


SQLITE: dict[str, Callable[[App, str], Awaitable[None]]] = {
    "options-not-json": lambda app, j: raw_sql(
        app, "UPDATE jobs SET options = x'00ff' WHERE id = ?", j
    ),
    "errors-not-json": lambda app, j: raw_sql(
        app, "UPDATE jobs SET errors = 'garbage' WHERE id = ?", j
    ),
    "payload-invalid-utf8": lambda app, j: raw_sql(
        app, "UPDATE jobs SET payload = ? WHERE id = ?", INVALID_UTF8, j
    ),
    "payload-nested-100k": lambda app, j: raw_sql(
        app, "UPDATE jobs SET payload = ? WHERE id = ?", NESTED, j
    ),
    "payload-not-an-object": lambda app, j: raw_sql(
        app, "UPDATE jobs SET payload = '[1, 2]' WHERE id = ?", j
    ),
}
REDIS: dict[str, Callable[[App, str], Awaitable[None]]] = {
    "data-not-msgpack": lambda app, j: raw_hset(app, "data", j, b"\xc1garbage"),
    "state-not-msgpack": lambda app, j: raw_hset(app, "jobs", j, b"\xc1garbage"),
    "errors-not-json": lambda app, j: raw_hset(app, "errors", j, b"garbage"),
    "payload-invalid-utf8": lambda app, j: redis_payload(app, j, INVALID_UTF8),
    "payload-nested-100k": lambda app, j: redis_payload(app, j, NESTED),
    "payload-not-an-object": lambda app, j: redis_payload(app, j, b"[1, 2]"),
}
CASES = [("sqlite", name) for name in SQLITE] + [("redis", name) for name in REDIS]
HARMLESS = {("redis", "errors-not-json")}
"""Damage the job survives: the Redis backend reads an unreadable history as one
``CorruptRecord`` entry, and the job runs as usual."""


@pytest.fixture
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    instance = App(fault_url(request.param, tmp_path), max_stalls=2)
    ran: list[int] = []

    @instance.job(queue=QUEUE)
    async def effect(ctx: JobContext, n: int) -> int:
        ran.append(n)
        return n

    @instance.job(queue=QUEUE)
    async def deep(ctx: JobContext, n: int, deep: Any) -> int:
        return n

    try:
        yield instance
    finally:
        await instance.close()


async def settle(app: App, total: int, timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        counts = await app.queue(QUEUE).counts()
        if counts["completed"] + counts["dead"] >= total or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("app", "corruption"),
    CASES,
    indirect=["app"],
    ids=[f"{backend}-{name}" for backend, name in CASES],
)
async def test_a_corrupted_record_ends_dead_and_the_worker_keeps_serving(
    app: App, corruption: str
) -> None:
    corrupt = (SQLITE if app.url.startswith("sqlite") else REDIS)[corruption]
    queue = app.queue(QUEUE)
    before = await queue.add_bulk({"name": "effect", "data": {"n": n}} for n in range(20))
    poisoned = await queue.add("effect", {"n": -1})
    after = await queue.add_bulk({"name": "effect", "data": {"n": n}} for n in range(20, 40))
    await corrupt(app, poisoned.id)

    worker = app.worker(
        [QUEUE], 4, lease_s=1.0, stall_check_s=0.2, idle_wait_s=0.05, handle_signals=False
    )
    task = asyncio.create_task(worker.run())
    try:
        counts = await settle(app, 41, timeout_s=20)
        assert not task.done(), "the worker stopped"
        # still serving: a job added after the poison is run
        late = await queue.add("effect", {"n": 99})
        assert await late.wait_until_finished(timeout=10) == 99
    finally:
        worker.stop(now=True)
        await asyncio.wait_for(task, 30)

    assert counts["active"] == 0, counts
    for job in before + after:
        assert (await job.refresh()).state is JobState.COMPLETED
    record = await poisoned.refresh()
    backend = "sqlite" if app.url.startswith("sqlite") else "redis"
    if (backend, corruption) in HARMLESS:
        assert counts["completed"] == 41, counts
        assert record.state is JobState.COMPLETED
        assert [e.error_type for e in record.errors] == ["CorruptRecord"]
        print(f"{corruption}: completed, history read as {record.errors[0].message!r}")
        return
    assert counts["completed"] == 40 and counts["dead"] == 1, counts
    dead = await queue.jobs(JobState.DEAD)
    assert [r.id for r in dead] == [poisoned.id]
    assert dead[0].reason, dead[0]
    print(f"{corruption}: dead, reason={dead[0].reason!r}")


@pytest.mark.parametrize("app", ["sqlite", "redis"], indirect=True)
async def test_a_10_mb_payload_is_refused_at_enqueue_with_a_clear_error(app: App) -> None:
    with pytest.raises(PayloadError, match=r"over the limit of \d+"):
        await app.queue(QUEUE).add("effect", {"n": 1, "blob": "x" * (10 * 2**20)})
    assert sum((await app.queue(QUEUE).counts()).values()) == 0


@pytest.mark.parametrize("app", ["sqlite", "redis"], indirect=True)
async def test_deeply_nested_data_is_refused_at_enqueue_or_runs(app: App) -> None:
    deep: Any = 1
    for _ in range(10_000):
        deep = {"d": deep}
    try:
        job = await app.queue(QUEUE).add("deep", {"n": 1, "deep": deep})
    except (PayloadError, RecursionError, msgspec.EncodeError) as exc:
        assert isinstance(exc, PayloadError), f"an unclear error: {exc!r}"
        print(f"nested data refused at enqueue: {exc}")
        return
    worker = app.worker([QUEUE], 2, burst=True, handle_signals=False)
    await asyncio.wait_for(worker.run(), 30)
    record = await job.refresh()
    assert record.state in (JobState.COMPLETED, JobState.DEAD), record.state
    assert record.state is JobState.COMPLETED or record.reason
    print(f"nested data: {record.state.value} {record.reason or ''}")
