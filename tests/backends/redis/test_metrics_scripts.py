"""The metrics scripts on Redis, run directly: bucket layout, relative expiry, limits,
the lifetime totals hash."""

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
from shigoto.backends.redis.metrics import bucket_key, totals_key
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


async def test_record_adds_to_a_totals_hash_under_the_queue_tag_that_never_expires(
    rb: RedisBackend, raw: Any, queue_name: str
) -> None:
    for minute in (T0, T0 + HOUR_MS):
        await rb.record_metrics(
            [MetricSample(queue_name, "send", minute, {"completed": 2, "run_3": 1})],
            now_ms=minute + 30_000,
        )
    key = totals_key(rb.prefix, queue_name)
    assert key.startswith(f"{{{rb.prefix}:{queue_name}}}".encode())
    assert await raw.hgetall(key) == {b"send|completed": b"4", b"send|run_3": b"2"}
    assert await raw.pttl(key) == -1  # no expiry: the totals must never drop


async def test_record_refuses_a_negative_ttl_or_a_bad_key_index_and_writes_nothing(
    rb: RedisBackend, raw: Any, queue_name: str
) -> None:
    """-3: a negative ``x`` would make PEXPIRE delete the hash (the totals with it); a
    ``k`` outside KEYS is a bug. Both are refused before anything is written."""
    await rb.record_metrics([MetricSample(queue_name, "n", T0, {"completed": 1})], now_ms=T0)
    totals = totals_key(rb.prefix, queue_name)
    bucket = bucket_key(rb.prefix, queue_name, MINUTE_MS, T0)
    before = await raw.hgetall(totals)
    for bad in (
        [
            {"k": 1, "x": 60_000, "f": ["n|completed", 1]},
            {"k": 2, "x": -1, "f": ["n|completed", 1]},
        ],
        [{"k": 1, "x": 60_000, "f": ["n|completed", 1]}, {"k": 3, "x": 0, "f": ["n|completed", 1]}],
    ):
        with pytest.raises(ConfigurationError, match="metrics_record"):
            await rb._run("metrics_record", [bucket, totals], (msgspec.msgpack.encode(bad),))
    assert await raw.hgetall(totals) == before == {b"n|completed": b"1"}
    assert await raw.hgetall(bucket) == {b"n|completed": b"1"}
    assert await raw.pttl(totals) == -1
