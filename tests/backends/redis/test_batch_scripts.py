"""The batch_*.lua scripts, called directly: their replies, error codes and key layout."""

from __future__ import annotations

from typing import Any

import pytest

from shigoto.backends.contract import BatchRecord
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.batches import _BatchKeys
from shigoto.errors import ConfigurationError

T0 = 1_700_000_000_000
BID = "batch-" + "ab" * 12


@pytest.fixture
async def made(rb: RedisBackend, queue_name: str) -> _BatchKeys:
    await rb.create_batch(
        BatchRecord(id=BID, queue=queue_name, name="chunk", created_ms=T0, definition=b"{}")
    )
    await rb.expect_batch_chunks(queue_name, BID, 0, 3)
    return _BatchKeys(rb.prefix, queue_name, BID)


async def test_batch_keys_live_under_the_queue_hash_tag(
    rb: RedisBackend, queue_name: str, made: _BatchKeys
) -> None:
    tag = f"{{{rb.prefix}:{queue_name}}}".encode()
    for key in (made.batch, made.pending, made.failed, made.index, made.open):
        assert key.startswith(tag), key


async def test_create_is_idempotent_and_indexes_the_batch(
    rb: RedisBackend, raw: Any, made: _BatchKeys
) -> None:
    again = await rb._run("batch_create", (made.batch, made.index, made.open), (BID, "x", T0, b""))
    assert again == 0
    assert await raw.hget(made.batch, "n") == b"chunk"
    assert await raw.zscore(made.open, BID) == T0
    assert sorted(await raw.smembers(made.pending)) == [b"0", b"1", b"2"]


async def test_record_error_codes(rb: RedisBackend, made: _BatchKeys) -> None:
    keys = (made.batch, made.pending, made.failed)
    with pytest.raises(ConfigurationError, match="malformed"):
        await rb._run("batch_record", keys, (T0, 0))
    with pytest.raises(ConfigurationError, match="limit"):
        await rb._run("batch_record", keys, (T0, *([0, "completed"] * 1001)))


async def test_record_counts_once_and_lists_failures(
    rb: RedisBackend, raw: Any, made: _BatchKeys
) -> None:
    keys = (made.batch, made.pending, made.failed)
    flat, failed = await rb._run("batch_record", keys, (T0, 0, "dead", 0, "completed", 9, "dead"))
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert (fields[b"x"], fields[b"c"], failed) == (b"1", b"0", [b"0"])
    assert sorted(await raw.smembers(made.pending)) == [b"1", b"2"]


async def test_reconcile_limit_code(rb: RedisBackend, queue_name: str, made: _BatchKeys) -> None:
    jobs = f"{{{rb.prefix}:{queue_name}}}:jobs".encode()
    with pytest.raises(ConfigurationError, match="limit"):
        await rb._run(
            "batch_reconcile", (made.batch, made.pending, made.failed, jobs), (T0, 0, BID)
        )


async def test_finish_refuses_an_unsealed_batch_and_an_unknown_one(
    rb: RedisBackend, queue_name: str, made: _BatchKeys
) -> None:
    assert not await rb.finish_batch(
        queue_name, BID, outcome="completed", follow_up=None, now_ms=T0
    )
    assert not await rb.finish_batch(
        queue_name, "batch-" + "cd" * 12, outcome="completed", follow_up=None, now_ms=T0
    )
