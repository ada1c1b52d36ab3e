"""Connections: URL forms, scripts reloaded after NOSCRIPT, recovery after a restart,
and blocking waits that neither miss a wake-up nor burn CPU."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shigoto.backends import open_backend
from shigoto.backends.contract import Claimed, Completion, Lease, NewJob
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.settings import RedisSettings
from shigoto.errors import BackendUnavailable, ConfigurationError
from shigoto.job import JobOptions, JobState

from .servers import RedisServer

T0 = 1_700_000_000_000


def job(queue: str, job_id: str, *, delay_ms: int = 0, now: int = T0) -> NewJob:
    return NewJob(job_id, queue, "task", b"{}", JobOptions(), now, now + delay_ms)


async def connected(url: str) -> RedisBackend:
    backend = open_backend(url)
    assert isinstance(backend, RedisBackend)
    await backend.connect()
    return backend


# -- URLs -------------------------------------------------------------------------------


def test_url_forms() -> None:
    plain = RedisSettings.from_url("redis://127.0.0.1:6380/3")
    assert (plain.host, plain.port, plain.db, plain.prefix) == ("127.0.0.1", 6380, 3, "shigoto")
    auth = RedisSettings.from_url("redis://alice:s%3Acret@redis.example:6379/0?prefix=app")
    assert (auth.username, auth.password, auth.prefix) == ("alice", "s:cret", "app")
    assert "s%3Acret" not in auth.display and "***" in auth.display
    unix = RedisSettings.from_url("unix:///run/redis.sock?db=2&prefix=p")
    assert (unix.unix_socket_path, unix.db, unix.prefix) == ("/run/redis.sock", 2, "p")
    tls = RedisSettings.from_url(
        "rediss://h:6390/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
        "&ssl_cert_reqs=optional&ssl_check_hostname=false"
    )
    assert tls.tls
    assert tls.connection_kwargs()["ssl_ca_certs"] == "/ca.pem"
    assert tls.connection_kwargs()["ssl_cert_reqs"] == "optional"
    assert tls.connection_kwargs()["ssl_check_hostname"] is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?prefix=a{b}", "braces"),
        ("redis://h/0?prefix=", "prefix"),
        ("redis://h/0?colour=blue", "unknown Redis URL option"),
        ("redis://h/0?ssl_ca_certs=/ca.pem", "rediss://"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("redis://h/x", "db"),
        ("redis://h/0?cluster=perhaps", "cluster"),
        ("unix://", "socket path"),
    ],
)
def test_bad_urls_are_refused_with_the_offending_option(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_backend(url)


async def test_every_key_of_a_queue_is_under_its_prefix_and_one_hash_tag(
    rb: RedisBackend, raw: Any, queue_name: str
) -> None:
    await rb.enqueue([job(queue_name, "a"), job(queue_name, "b", delay_ms=10)], T0)
    [claimed] = await rb.claim(queue_name, limit=1, worker_id="w", lease_ms=1000, now_ms=T0)
    await rb.complete([Completion(claimed_lease(claimed), b"1", T0)], T0)
    found = [key async for key in raw.scan_iter(match=f"{{{rb.prefix}:*", count=1000)]
    assert found, "no keys under the prefix"
    assert all(key.startswith(f"{{{rb.prefix}:{queue_name}}}:".encode()) for key in found)
    if rb.is_cluster:
        slots = {raw.keyslot(key) for key in found}
        assert len(slots) == 1, "every key of one queue lives in one cluster slot"


def claimed_lease(claimed: Claimed) -> Lease:
    return Lease(claimed.record.queue, claimed.record.id, claimed.token)


# -- scripts and restarts (a server of the test's own) ----------------------------------


async def test_scripts_are_reloaded_after_script_flush(own_server: RedisServer) -> None:
    backend = await connected(own_server.url())
    try:
        await backend.enqueue([job("q", "a")], T0)  # sent with its body (lane.py)
        assert (await backend.counts("q"))[JobState.WAITING] == 1
        assert backend.script_reloads >= 1  # a fresh server knows no script
        before = backend.script_reloads
        with own_server.client() as client:
            client.script_flush()
        assert (await backend.counts("q"))[JobState.WAITING] == 1
        assert backend.script_reloads == before + 1
    finally:
        await backend.close()


async def test_a_backend_raises_during_an_outage_and_recovers_by_itself(
    own_server: RedisServer,
) -> None:
    backend = await connected(own_server.url())
    try:
        await backend.enqueue([job("q", "before")], T0)
        own_server.stop()
        with pytest.raises(BackendUnavailable, match=str(own_server.port)):
            await backend.enqueue([job("q", "during")], T0)
        with pytest.raises(BackendUnavailable):
            await backend.wait_for_work(["q"], 0.5)
        own_server.start()  # same port, data from the append-only file
        done = await backend.enqueue([job("q", "after")], T0)  # same backend instance
        assert done[0].created
        ids = [r.id for r in await backend.list_jobs("q", JobState.WAITING)]
        assert ids == ["before", "after"]
    finally:
        await backend.close()


async def test_a_stale_pooled_connection_after_a_restart_costs_no_error(
    own_server: RedisServer,
) -> None:
    """The server restarted while we were idle: the first command still succeeds."""
    backend = await connected(own_server.url())
    try:
        await backend.enqueue([job("q", "a")], T0)
        own_server.restart()
        assert (await backend.counts("q"))[JobState.WAITING] == 1
    finally:
        await backend.close()


# -- blocking waits ---------------------------------------------------------------------


async def test_a_wait_sees_an_enqueue_that_happened_between_the_empty_claim_and_the_wait(
    backend_url: str, queue_name: str
) -> None:
    worker, producer = await connected(backend_url), await connected(backend_url)
    try:
        assert (
            await worker.claim(queue_name, limit=1, worker_id="w", lease_ms=1000, now_ms=T0) == []
        )
        await producer.enqueue([job(queue_name, "a")], T0)  # before the worker blocks
        started = time.monotonic()
        await worker.wait_for_work([queue_name], 5.0)
        assert time.monotonic() - started < 0.5
    finally:
        await worker.close()
        await producer.close()


async def test_an_idle_wait_blocks_without_using_cpu(backend_url: str, queue_name: str) -> None:
    worker = await connected(backend_url)
    try:
        cpu, wall = time.process_time(), time.monotonic()
        await worker.wait_for_work([queue_name], 1.0)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        assert 0.9 < wall < 2.5
        assert cpu < 0.05, f"an idle wait used {cpu:.3f} s of CPU in {wall:.2f} s"
    finally:
        await worker.close()


async def test_a_cancelled_wait_leaves_no_ghost_that_swallows_the_next_wake_up(
    backend_url: str, queue_name: str
) -> None:
    worker, producer = await connected(backend_url), await connected(backend_url)
    try:
        waiting = asyncio.create_task(worker.wait_for_work([queue_name], 30.0))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.05)
        again = asyncio.create_task(worker.wait_for_work([queue_name], 10.0))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await producer.enqueue([job(queue_name, "a")], T0)
        await asyncio.wait_for(again, 3.0)
        assert time.monotonic() - started < 1.0
    finally:
        await worker.close()
        await producer.close()


async def test_a_wait_ends_when_the_earliest_delayed_job_is_due(
    backend_url: str, queue_name: str
) -> None:
    worker = await connected(backend_url)
    try:
        now = int(time.time() * 1000)
        await worker.enqueue([job(queue_name, "soon", delay_ms=300, now=now)], now)
        assert (
            await worker.claim(queue_name, limit=1, worker_id="w", lease_ms=1000, now_ms=now) == []
        )
        await worker.wait_for_work([queue_name], 0.05)  # consume the enqueue's marker
        started = time.monotonic()
        await worker.wait_for_work([queue_name], 5.0)
        assert 0.15 < time.monotonic() - started < 1.0
        later = int(time.time() * 1000)
        [claimed] = await worker.claim(
            queue_name, limit=1, worker_id="w", lease_ms=1000, now_ms=later
        )
        assert claimed.record.id == "soon"
    finally:
        await worker.close()


async def test_a_wait_on_several_queues_wakes_for_any_of_them(
    backend_url: str, queue_name: str
) -> None:
    """On the cluster these queues live on different nodes: one wait per node."""
    queues = [f"{queue_name}-{n}" for n in range(6)]
    worker, producer = await connected(backend_url), await connected(backend_url)
    try:
        for target in (queues[0], queues[-1]):
            waiting = asyncio.create_task(worker.wait_for_work(queues, 10.0))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await producer.enqueue([job(target, "a")], T0)
            await asyncio.wait_for(waiting, 3.0)
            assert time.monotonic() - started < 1.0
            await worker.claim(target, limit=10, worker_id="w", lease_ms=1000, now_ms=T0)
    finally:
        await worker.close()
        await producer.close()


async def test_a_claim_that_leaves_jobs_behind_wakes_the_next_idle_worker(
    backend_url: str, queue_name: str
) -> None:
    first, second = await connected(backend_url), await connected(backend_url)
    try:
        await first.enqueue([job(queue_name, f"j{n}") for n in range(3)], T0)
        await first.wait_for_work([queue_name], 1.0)  # takes the enqueue's marker
        assert (
            len(await first.claim(queue_name, limit=1, worker_id="a", lease_ms=9, now_ms=T0)) == 1
        )
        started = time.monotonic()
        await second.wait_for_work([queue_name], 5.0)
        assert time.monotonic() - started < 0.5
    finally:
        await first.close()
        await second.close()
