"""Redis restarted mid-run, and the network between workers and Redis cut, stalled
and slowed through a proxy the test controls (``proxy.py``). Real worker processes,
a redis-server of the test's own (AOF, fsync always) on a free loopback port.

Each test ends with the accounting of ``_accounting.check`` and with proof that every
worker is still *consuming* afterwards (it ran jobs after the fault), not merely alive.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backends.redis.servers import RedisServer
from shigoto import App

from ._accounting import ledger
from ._procs import Cluster, enqueue_effects, make_cluster, settle_and_check, wait_for_rows
from .proxy import Proxy

pytestmark = pytest.mark.servers

FAST = {"concurrency": 8, "lease": 2.0, "stall_check": 0.3, "grace": 2.0}


@pytest.fixture
def prefix() -> str:
    return f"faults-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_cluster(
    own_redis: RedisServer, prefix: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    cluster = make_cluster(tmp_path, own_redis.url(prefix))
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop_all)


@pytest.fixture
async def app(redis_cluster: Cluster) -> AsyncIterator[App]:
    instance = App(redis_cluster.url)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def proxy(own_redis: RedisServer) -> Iterator[Proxy]:
    instance = Proxy(own_redis.port).start()
    try:
        yield instance
    finally:
        instance.stop()


def worked_after(cluster: Cluster, since_ms: int) -> set[int]:
    """Pids of the workers that started a job after ``since_ms``."""
    return {run.pid for run in ledger(cluster.effects) if run.start_ms > since_ms}


async def test_a_redis_restart_under_two_worker_processes_loses_no_job(
    own_redis: RedisServer, redis_cluster: Cluster, app: App
) -> None:
    ids = await enqueue_effects(app, 1200, sleep=lambda n: 0.01 + (n % 5) * 0.01)
    workers = [redis_cluster.spawn(**FAST) for _ in range(2)]
    await wait_for_rows(redis_cluster.effects, 250, timeout=60)

    await asyncio.to_thread(own_redis.restart, down_s=1.0)
    back_ms = int(time.time() * 1000)

    report = await settle_and_check(app, redis_cluster, ids, timeout=90)
    print(f"redis restart: {report}")
    assert report.completed == len(ids), report
    assert all(w.alive() for w in workers), redis_cluster.logs_text()[-3000:]
    assert worked_after(redis_cluster, back_ms) == {w.pid for w in workers}


async def test_cutting_every_connection_three_times_loses_no_job(
    redis_cluster: Cluster, app: App, proxy: Proxy, prefix: str
) -> None:
    ids = await enqueue_effects(app, 600, sleep=lambda n: 0.01 + (n % 4) * 0.02)
    workers = [redis_cluster.spawn(url=proxy.url(prefix), **FAST) for _ in range(2)]
    cuts = []
    for target in (100, 250, 400):
        await wait_for_rows(redis_cluster.effects, target, timeout=60)
        cuts.append(await asyncio.to_thread(proxy.cut))

    report = await settle_and_check(app, redis_cluster, ids, timeout=90)
    print(f"cut x3 ({cuts} connections): {report}")
    assert report.completed == len(ids), report
    assert all(w.alive() for w in workers)
    assert sum(cuts) > 0 and proxy.connections > sum(cuts)  # the workers did reconnect


async def test_a_blackhole_longer_than_the_lease_moves_jobs_to_a_healthy_worker(
    redis_cluster: Cluster, app: App, proxy: Proxy, prefix: str
) -> None:
    ids = await enqueue_effects(app, 120, sleep=0.4)
    cut_off = redis_cluster.spawn(url=proxy.url(prefix), concurrency=4, lease=1.5, grace=2.0)
    await wait_for_rows(redis_cluster.effects, 4, timeout=30)
    healthy = redis_cluster.spawn(concurrency=4, lease=1.5, stall_check=0.3, grace=2.0)

    await asyncio.to_thread(proxy.blackhole)
    await asyncio.sleep(4.0)  # well past the 1.5 s lease: the healthy worker takes over
    await asyncio.to_thread(proxy.heal)
    healed_ms = int(time.time() * 1000)

    report = await settle_and_check(app, redis_cluster, ids, timeout=90)
    print(f"blackhole 4 s > lease 1.5 s: {report}")
    assert report.completed == len(ids), report
    assert cut_off.alive() and healthy.alive()
    # the cut-off worker consumes again once the network heals
    more = await enqueue_effects(app, 40, sleep=0.2)
    report = await settle_and_check(app, redis_cluster, ids + more, timeout=60)
    assert cut_off.pid in worked_after(redis_cluster, healed_ms), redis_cluster.logs_text()[-3000:]


async def test_every_packet_slowed_by_30_ms_loses_no_job_and_runs_none_twice(
    redis_cluster: Cluster, app: App, proxy: Proxy, prefix: str
) -> None:
    proxy.delay_s = 0.03
    ids = await enqueue_effects(app, 150, sleep=0.02)
    workers = [redis_cluster.spawn(url=proxy.url(prefix), **FAST) for _ in range(2)]
    report = await settle_and_check(app, redis_cluster, ids, timeout=90)
    print(f"slow packets (30 ms): {report}")
    assert report.completed == len(ids) and report.duplicated == 0, report
    assert all(w.alive() for w in workers)
