"""The metrics scripts on Redis, run directly: bucket layout, relative expiry, limits."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shigoto.backends.contract import (
    HOUR_MS,
    MINUTE_MS,
    MINUTE_RETENTION_MS,
    MetricSample,
)
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.metrics import bucket_key
from shigoto.backends.redis.records import queue_keys
from shigoto.errors import ConfigurationError

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS


async def test_record_writes_one_hash_per_bucket_under_the_queue_tag_with_a_ttl(
    rb: RedisBackend, raw: Any, queue_name: str
) -> None:
    now = T0 + 30_000  # a frozen clock far in the past of the server's own clock
    await rb.record_metrics(
        [MetricSample(queue_name, "send", T0, {"completed": 2, "run_3": 2})], now_ms=now
    )
    minute = bucket_key(rb.prefix, queue_name, MINUTE_MS, T0)
    hour = bucket_key(rb.prefix, queue_name, HOUR_MS, T0)
    assert minute.startswith(f"{{{rb.prefix}:{queue_name}}}".encode())
    assert await raw.hgetall(minute) == {b"send|completed": b"2", b"send|run_3": b"2"}
    assert await raw.hgetall(hour) == {b"send|completed": b"2", b"send|run_3": b"2"}
    # Expiry is relative to the caller's clock: the bucket lives its 24 h from "now".
    ttl = await raw.pttl(minute)
    assert MINUTE_RETENTION_MS - 60_000 < ttl <= MINUTE_RETENTION_MS + MINUTE_MS - 30_000


async def test_a_job_name_with_the_separator_reads_back_whole(
    rb: RedisBackend, queue_name: str
) -> None:
    await rb.record_metrics([MetricSample(queue_name, "a|b", T0, {"completed": 1})], now_ms=T0)
    [bucket] = await rb.read_metrics(
        queue_name, resolution="minute", since_ms=T0, until_ms=T0 + MINUTE_MS
    )
    assert (bucket.name, bucket.values) == ("a|b", {"completed": 1})


async def test_record_refuses_more_than_1000_entries(rb: RedisBackend, queue_name: str) -> None:
    entries = [{"k": 1, "x": 60_000, "f": ["n|completed", 1]}] * 1001
    key = bucket_key(rb.prefix, queue_name, MINUTE_MS, T0)
    with pytest.raises(ConfigurationError, match="metrics_record"):
        await rb._run("metrics_record", [key], (msgspec.msgpack.encode(entries),))


async def test_counts_by_name_refuses_a_limit_below_one(rb: RedisBackend, queue_name: str) -> None:
    keys = queue_keys(rb.prefix, queue_name)
    script_keys = [keys.jobs, keys.wait, keys.delayed, keys.active, keys.dead]
    for bad in (0, -1, "x"):
        with pytest.raises(ConfigurationError, match="metrics_counts_by_name"):
            await rb._run("metrics_counts_by_name", script_keys, (bad,))
