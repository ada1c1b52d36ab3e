"""Overlapping enqueue calls (``backends/redis/lane.py``): a bulk add keeps several chunks in
flight on standalone Redis, and they are still stored in the order they were made."""

from __future__ import annotations

import asyncio
import time

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shigoto import App
from shigoto.backends.contract import NewJob, OverlappingEnqueue
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.backend import ENQUEUE_WINDOW
from shigoto.backends.redis.lane import OrderedLane, pack_commands
from shigoto.errors import BackendUnavailable
from shigoto.job import JobOptions

from .servers import RedisServer


def job(queue: str, job_id: str, payload: bytes = b"{}", now: int | None = None) -> NewJob:
    now = int(time.time() * 1000) if now is None else now
    return NewJob(job_id, queue, "task", payload, JobOptions(), now, now)


async def claim_all(rb: RedisBackend, queue: str) -> list[str]:
    claimed = await rb.claim(
        queue, limit=1000, worker_id="w", lease_ms=60_000, now_ms=int(time.time() * 1000)
    )
    return [c.record.id for c in claimed]


def test_calls_overlap_on_standalone_redis_and_not_on_a_cluster(rb: RedisBackend) -> None:
    assert isinstance(rb, OverlappingEnqueue)
    assert rb.enqueue_window() == (1 if rb.is_cluster else ENQUEUE_WINDOW)
    assert ENQUEUE_WINDOW > 1


BUSY_100_MS = """
local t0 = redis.call('TIME')
repeat
  local t = redis.call('TIME')
until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 100000
return 1
"""


async def test_a_small_call_made_after_a_huge_one_is_stored_after_it(
    own_server: RedisServer,
) -> None:
    # While Redis is busy, both commands wait in its sockets; then it reads them a piece
    # at a time, so on two connections the small one, complete first, would run first.
    # On the lane it waits its turn.
    backend = RedisBackend(own_server.url())
    busy = aioredis.Redis(host="127.0.0.1", port=own_server.port)
    try:
        now = int(time.time() * 1000)  # every job ready at the same ms: claimed in
        # the order stored; the queue is registered before Redis gets busy, so both
        # calls below are sent at once
        await backend.enqueue([job("q", "opener", now=now)], now)
        big = b'"' + b"x" * 2000 + b'"'
        huge = [job("q", f"big-{n:03}", big, now) for n in range(1000)]
        blocking = asyncio.create_task(busy.eval(BUSY_100_MS, 0))
        await asyncio.sleep(0.02)
        first = asyncio.create_task(backend.enqueue(huge, now))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(backend.enqueue([job("q", "small", now=now)], now))
        await asyncio.gather(blocking, first, second)
        assert await claim_all(backend, "q") == ["opener"] + [j.id for j in huge[:999]]
        assert await claim_all(backend, "q") == [huge[999].id, "small"]
    finally:
        await busy.aclose()
        await backend.close()


async def test_the_first_calls_for_a_new_queue_keep_their_order(
    own_server: RedisServer,
) -> None:
    # A backend's first call for a queue registers it (a round trip) before it sends:
    # the calls made behind it wait in line instead of overtaking it meanwhile.
    backend = RedisBackend(own_server.url())
    busy = aioredis.Redis(host="127.0.0.1", port=own_server.port)
    try:
        await backend.connect()
        now = int(time.time() * 1000)
        blocking = asyncio.create_task(busy.eval(BUSY_100_MS, 0))
        await asyncio.sleep(0.02)
        calls = []
        for n in range(5):
            calls.append(asyncio.create_task(backend.enqueue([job("q", f"j{n}", now=now)], now)))
            await asyncio.sleep(0.005)
        await asyncio.gather(blocking, *calls)
        assert await claim_all(backend, "q") == [f"j{n}" for n in range(5)]
    finally:
        await busy.aclose()
        await backend.close()


async def test_a_bulk_add_keeps_its_order_with_chunks_in_flight(
    backend_url: str, queue_name: str
) -> None:
    app = App(backend_url)
    try:
        queue = app.queue(queue_name)
        stored: list[int] = []
        added = await queue.add_bulk(
            ({"name": "task", "data": {"n": n}} for n in range(5500)), on_progress=stored.append
        )
        assert stored == [1000, 2000, 3000, 4000, 5000, 5500]
        backend = await app.backend()
        assert isinstance(backend, RedisBackend)
        claimed: list[str] = []
        while batch := await claim_all(backend, queue_name):
            claimed += batch
        assert claimed == [job.id for job in added]
        # the audit trail holds the enqueues in the same order (it lists newest first),
        # chunk after chunk although each chunk's entries follow its store on their own
        entries = await app.audit.query(action="enqueue", queue=queue_name, limit=6000)
        assert [e.job_id for e in reversed(entries)] == [job.id for job in added]
    finally:
        await app.close()


async def test_a_bad_item_stops_the_add_after_the_chunks_before_it_are_stored(
    backend_url: str, queue_name: str
) -> None:
    app = App(backend_url)
    try:
        items: list[object] = [{"name": "task", "data": {"n": n}} for n in range(2500)]
        items.append("not a job")
        with pytest.raises(Exception, match="add_bulk item 2500"):
            await app.queue(queue_name).add_bulk(items)  # type: ignore[arg-type]
        assert (await app.queue(queue_name).counts())["waiting"] == 2000
    finally:
        await app.close()


async def test_the_lane_loads_its_script_and_resends_it_after_a_script_flush(
    own_server: RedisServer,
) -> None:
    backend = RedisBackend(own_server.url())
    try:
        await backend.enqueue([job("q", "a")], int(time.time() * 1000))
        assert backend.script_reloads == 0  # loaded when the lane connected
        with own_server.client() as client:
            client.script_flush()
        now = int(time.time() * 1000)
        # two calls in flight, both refused: re-sent in their order
        await asyncio.gather(
            backend.enqueue([job("q", "b")], now), backend.enqueue([job("q", "c")], now)
        )
        assert backend.script_reloads == 2
        assert await claim_all(backend, "q") == ["a", "b", "c"]
    finally:
        await backend.close()


async def test_a_cancelled_call_drops_its_connection_and_the_next_call_opens_one(
    own_server: RedisServer,
) -> None:
    lane = OrderedLane(RedisBackend(own_server.url()).settings)
    try:
        blocked = asyncio.create_task(lane.call("BLPOP", "nothing", "5"))
        await asyncio.sleep(0.1)
        behind = asyncio.create_task(lane.call("PING"))
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        # the call sent behind it lost its reply with the connection
        with pytest.raises(BackendUnavailable):
            await behind
        assert await lane.call("PING") == b"PONG"
        reply = await lane.call("EVAL", "return redis.error_reply('nope')", 0)
        assert isinstance(reply, Exception) and "nope" in str(reply)
        assert await lane.call("PING") == b"PONG"  # an error reply keeps it in step
    finally:
        await lane.close()


async def test_a_stopped_server_is_reported_unavailable_and_the_lane_recovers(
    own_server: RedisServer,
) -> None:
    backend = RedisBackend(own_server.url())
    try:
        await backend.enqueue([job("q", "before")], int(time.time() * 1000))
        own_server.stop()
        with pytest.raises(BackendUnavailable, match=str(own_server.port)):
            await backend.enqueue([job("q", "during")], int(time.time() * 1000))
        own_server.start()
        await backend.enqueue([job("q", "after")], int(time.time() * 1000))
        assert await backend.get("q", "after") is not None
    finally:
        await backend.close()


async def test_the_first_calls_after_a_server_restart_go_through(own_server: RedisServer) -> None:
    """The connections kept from before the restart were closed by the server; the
    first call on each finds out and is sent again on a fresh one, not reported as an
    outage (a web app would answer its first request after every restart with an
    error). Both lanes: enqueues, and a worker's claims and completions."""
    backend = RedisBackend(own_server.url())
    try:
        await backend.enqueue([job("q", "a")], int(time.time() * 1000))
        assert await claim_all(backend, "q") == ["a"]
        await asyncio.to_thread(own_server.restart)

        created = await backend.enqueue([job("q", "b")], int(time.time() * 1000))
        assert [e.created for e in created] == [True]
        assert await claim_all(backend, "q") == ["b"]  # "a" is still claimed (AOF)
    finally:
        await backend.close()


async def test_a_call_sent_again_after_a_restart_never_runs_after_a_later_call(
    own_server: RedisServer,
) -> None:
    """Two calls on the lane when it finds out about the restart: whichever way the
    race goes, the later one never runs before the earlier one (at worst, the earlier
    one is reported unavailable, as every call was before calls were sent again)."""
    lane = OrderedLane(RedisBackend(own_server.url()).settings)
    try:
        for _ in range(3):
            assert await lane.call("PING") == b"PONG"
            await asyncio.to_thread(own_server.restart)
            first = asyncio.create_task(lane.call("SET", "k", "1"))
            behind = asyncio.create_task(lane.call("SET", "k", "2"))
            outcomes = await asyncio.gather(first, behind, return_exceptions=True)
            assert b"OK" in outcomes, outcomes
            value = await lane.call("GET", "k")
            assert value == (b"2" if outcomes[1] == b"OK" else b"1"), outcomes
            await lane.call("DEL", "k")
    finally:
        await lane.close()


async def test_commands_sent_together_get_their_replies_in_order_errors_included(
    rb: RedisBackend,
) -> None:
    if rb.is_cluster:
        pytest.skip("the lane is for standalone Redis")
    lane = OrderedLane(rb.settings)
    key = f"{rb.prefix}:lane-many"
    try:
        replies = await lane.call_many(
            [("SET", key, "1"), ("INCRBY", key, 2), ("HGET", key, "f"), ("GET", key)]
        )
        assert replies[:2] == [b"OK", 3]
        assert isinstance(replies[2], ResponseError)  # WRONGTYPE: returned, in step
        assert replies[3] == b"3"
        assert await lane.call("DEL", key) == 1
    finally:
        await lane.close()


def test_commands_sent_together_are_packed_as_hiredis_packs_them() -> None:
    commands = [("MULTI",), ("XADD", b"k", "*", "n", 1000, "b", b"\x00" * 70_000), ("EXEC",)]

    assert b"".join(pack_commands(commands)) == b"".join(
        hiredis.pack_command(command) for command in commands
    )
