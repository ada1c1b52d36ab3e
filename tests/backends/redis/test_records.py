"""How a job is laid out in Redis (records.py): its ``data`` holds the payload and only
the options that differ from the frozen base; jobs stored with every option read the
same."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from shigoto.backends.contract import NewJob
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.records import QueueKeys
from shigoto.job import JobOptions, Retention


class _StoredDataBefore(msgspec.Struct, array_like=True):
    """``StoredData`` as the version before this layout decoded it."""

    payload: bytes
    options: JobOptions


async def test_a_job_stores_only_the_options_that_differ_and_reads_them_back_whole(
    rb: RedisBackend, keys: QueueKeys, raw: Any, queue_name: str
) -> None:
    now = int(time.time() * 1000)
    options = JobOptions(attempts=5, actor="alice", remove_on_complete=Retention(count=0))
    await rb.enqueue([NewJob("j1", queue_name, "task", b'{"n":1}', options, now, now)], now)

    payload, stored = msgspec.msgpack.decode(await raw.hget(keys.data, "j1"))
    assert payload == b'{"n":1}'
    assert stored == {
        "attempts": 5,
        "actor": "alice",
        "remove_on_complete": {"count": 0, "age_s": None},
    }
    record = await rb.get(queue_name, "j1")
    assert record is not None and record.options == options
    # a worker of the version before reads it too (a rolling upgrade): every option it
    # leaves out has a default equal to the frozen base
    before = msgspec.msgpack.decode(await raw.hget(keys.data, "j1"), type=_StoredDataBefore)
    assert before.options == options

    # stored by an older version: every option in full
    await raw.hset(keys.data, "j1", msgspec.msgpack.encode([b'{"n":1}', options]))
    [claimed] = await rb.claim(queue_name, limit=1, worker_id="w", lease_ms=60_000, now_ms=now)
    assert claimed.record.options == options
