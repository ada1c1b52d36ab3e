"""The audit stream on Redis: one stream item per append call, an entry count kept in
step with the stream, the cap enforced by whole items (on standalone Redis after a
plain XADD, by audit_trim.lua; on a cluster by audit_append.lua), and queries that
resume inside an item."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shigoto.backends.audit_groups import AuditGroup, GroupedEntries
from shigoto.backends.contract import AuditEntry, AuditFilter
from shigoto.backends.redis import RedisBackend, plumbing
from shigoto.backends.redis import audit as redis_audit
from shigoto.backends.redis.scripts import BAD_ARGUMENTS, OVER_LIMIT, Script, load_scripts
from shigoto.errors import ShigotoError

T0 = 1_700_000_000_000
SCRIPTS = load_scripts()
_encode = msgspec.msgpack.Encoder().encode


def entry(n: int) -> AuditEntry:
    return AuditEntry(T0 + n, "alice", "enqueue", "q", f"job-{n}", None)


async def append(rb: RedisBackend, cap: int, entries: list[AuditEntry]) -> Any:
    blob = _encode(entries)
    return await rb._eval(SCRIPTS["audit_append"], rb._audit_keys, (cap, len(entries), blob))


async def held(rb: RedisBackend) -> int:
    return int(await rb._call("GET", rb._audit_keys[1]) or 0)


async def test_one_call_is_one_stream_item_and_the_count_follows(rb: RedisBackend) -> None:
    await rb.audit_append([entry(n) for n in range(5)])
    await rb.audit_append([entry(5)])

    assert await rb._call("XLEN", rb._audit_key) == 2
    assert await held(rb) == 6
    page = await rb.audit_query(AuditFilter(), limit=100)
    assert [e.at_ms for e in page.items] == [T0 + n for n in reversed(range(6))]


async def test_grouped_entries_are_stored_as_their_groups(rb: RedisBackend) -> None:
    # a bulk add's chunk: 1,000 enqueue entries alike but for the job id, stored as one
    # group (the ids and one copy of the rest) instead of 1,000 entry maps
    ids = [f"{n:024x}" for n in range(1000)]
    groups = [AuditGroup(T0, "alice", "enqueue", "q", b'{"name":"task"}', ids)]
    await rb.audit_append(GroupedEntries(groups))

    [[_, stored]] = await rb._call("XRANGE", rb._audit_key, "-", "+")
    assert stored.keys() == {b"n", b"g"}
    assert int(stored[b"n"]) == await held(rb) == 1000
    assert len(stored[b"g"]) < 26 * 1000  # 117 bytes per entry as maps
    page = await rb.audit_query(AuditFilter(), limit=1000)
    assert page.items == list(reversed(list(GroupedEntries(groups))))


async def test_the_cluster_script_appends_groups_under_their_own_field(rb: RedisBackend) -> None:
    groups = [AuditGroup(T0, "alice", "enqueue", "q", None, ["a", "b"])]
    script, keys = SCRIPTS["audit_append"], rb._audit_keys

    assert await rb._eval(script, keys, (0, 2, _encode(groups), "g")) == 2
    assert await rb._eval(script, keys, (0, 2, _encode(groups), "x")) == BAD_ARGUMENTS

    page = await rb.audit_query(AuditFilter())
    assert [e.job_id for e in page.items] == ["b", "a"]


async def test_over_the_cap_the_oldest_items_go_whole(rb: RedisBackend) -> None:
    assert await append(rb, 0, [entry(n) for n in range(4)]) == 4
    assert await append(rb, 0, [entry(n) for n in range(4, 7)]) == 3

    assert await append(rb, 5, [entry(7)]) == 1  # 8 held > 5: the 4-entry item goes

    assert await held(rb) == 4
    page = await rb.audit_query(AuditFilter())
    assert [e.at_ms for e in page.items] == [T0 + 7, T0 + 6, T0 + 5, T0 + 4]


async def test_appends_over_the_cap_drop_the_oldest_items_whole(
    rb: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_audit, "AUDIT_MAXLEN", 5)
    await rb.audit_append([entry(n) for n in range(4)])
    await rb.audit_append([entry(n) for n in range(4, 7)])  # 7 held > 5: the 4 go

    assert await held(rb) == 3
    await rb.audit_append([entry(7)])  # 4 held: nothing goes

    page = await rb.audit_query(AuditFilter())
    assert [e.at_ms - T0 for e in page.items] == [7, 6, 5, 4]
    assert await held(rb) == 4


async def test_on_standalone_redis_an_append_runs_no_script(
    rb: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A script pays ~1 ns of Redis CPU per byte of its arguments: a batch of 1,000
    # entries cost 210 us that way, against 53 us as a plain XADD.
    if rb.is_cluster:
        pytest.skip("a cluster appends with audit_append.lua (no cluster transactions)")
    broken = Script("audit_append", "return redis.error_reply('not to be run')")
    monkeypatch.setitem(plumbing.SCRIPTS, "audit_append", broken)

    await rb.audit_append([entry(n) for n in range(1000)])

    assert await held(rb) == 1000
    assert await rb._call("XLEN", rb._audit_key) == 1


async def test_an_append_that_redis_refuses_says_so(rb: RedisBackend) -> None:
    await rb._call("SET", rb._audit_key, "not a stream")

    with pytest.raises(ShigotoError, match="WRONGTYPE"):
        await rb.audit_append([entry(0)])


async def test_trim_deletes_the_oldest_items_while_over_the_cap(rb: RedisBackend) -> None:
    await append(rb, 0, [entry(n) for n in range(3)])
    await append(rb, 0, [entry(n) for n in range(3, 5)])

    assert await rb._eval(SCRIPTS["audit_trim"], rb._audit_keys, (4,)) == 1
    assert await rb._eval(SCRIPTS["audit_trim"], rb._audit_keys, (2,)) == 0  # 2 held
    assert await held(rb) == 2
    assert await rb._eval(SCRIPTS["audit_trim"], rb._audit_keys, (0,)) == BAD_ARGUMENTS


async def test_append_error_codes(rb: RedisBackend) -> None:
    assert await rb._eval(SCRIPTS["audit_append"], rb._audit_keys, (0, 0, b"")) == BAD_ARGUMENTS
    too_many = [entry(n) for n in range(1001)]
    assert await append(rb, 0, too_many) == OVER_LIMIT
    assert await rb._call("XLEN", rb._audit_key) == 0


async def test_prune_removes_old_items_and_their_count(rb: RedisBackend) -> None:
    await rb.audit_append([entry(n) for n in range(3)])
    await rb.audit_append([entry(3)])
    [[newest_id, _]] = await rb._call("XREVRANGE", rb._audit_key, "+", "-", "COUNT", 1)
    bound = int(newest_id.decode().split("-")[0])

    removed = await rb._eval(SCRIPTS["audit_prune"], rb._audit_keys, (bound, 1000))

    # everything strictly older than the newest item's millisecond is gone
    assert removed in (0, 3)
    assert await held(rb) == 4 - removed
    assert await rb._eval(SCRIPTS["audit_prune"], rb._audit_keys, (bound, 0)) == OVER_LIMIT


async def test_a_page_may_end_inside_an_item_and_the_next_resumes_there(
    rb: RedisBackend,
) -> None:
    await rb.audit_append([entry(n) for n in range(10)])

    first = await rb.audit_query(AuditFilter(), limit=4)
    assert [e.at_ms - T0 for e in first.items] == [9, 8, 7, 6]
    assert first.cursor is not None and ":" in first.cursor
    second = await rb.audit_query(AuditFilter(), cursor=first.cursor, limit=4)
    third = await rb.audit_query(AuditFilter(), cursor=second.cursor, limit=4)

    assert [e.at_ms - T0 for e in second.items] == [5, 4, 3, 2]
    assert [e.at_ms - T0 for e in third.items] == [1, 0]
    assert third.cursor is None


async def test_items_of_the_one_entry_format_are_still_read(rb: RedisBackend) -> None:
    await rb._call("XADD", rb._audit_key, "*", "e", _encode(entry(0)))
    await rb.audit_append([entry(1), entry(2)])

    page = await rb.audit_query(AuditFilter())

    assert [e.at_ms - T0 for e in page.items] == [2, 1, 0]
