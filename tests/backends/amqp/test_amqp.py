"""What the RabbitMQ backend adds to its record store: URL options, the delay-bucket
grid, notifications on the broker, a worker killed with SIGKILL (its deliveries come
back), and three worker processes sharing one queue."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import pytest

from shigoto import App, JobContext, JobState
from shigoto.backends.amqp import StoredBackend, StorelessBackend
from shigoto.backends.amqp.settings import parse_url
from shigoto.backends.amqp.topology import bucket_ms, work_queue
from shigoto.errors import ConfigurationError

HERE = Path(__file__).parent
CONTRACT = HERE.parents[2] / "src" / "shigoto" / "backends" / "contract.py"


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# -- no broker needed -------------------------------------------------------------------


def test_the_store_url_takes_the_rest_of_the_url_or_is_percent_encoded() -> None:
    plain = parse_url("amqp://u:p@h:5672/v?prefix=x&store=redis://r:6379/0?prefix=a&b=1")
    assert plain.store_url == "redis://r:6379/0?prefix=a&b=1"
    assert plain.prefix == "x"
    assert plain.broker_url == "amqp://u:p@h:5672/v"
    encoded = parse_url("amqps://h/?store=sqlite%3A%2F%2F%2Fjobs.db&classic=a,b&heartbeat=30")
    assert encoded.store_url == "sqlite:///jobs.db"
    assert encoded.classic == frozenset({"a", "b"})
    assert encoded.broker_url == "amqps://h/?heartbeat=30"


def test_a_url_without_a_store_is_store_less_and_an_empty_store_is_refused() -> None:
    assert parse_url("amqp://guest:secret@127.0.0.1/").store_url is None
    with pytest.raises(ConfigurationError, match="store= is empty"):
        parse_url("amqp://guest:secret@127.0.0.1/?store=")


def test_a_notification_expires_after_notice_ttl_seconds_or_never() -> None:
    def ttl(option: str) -> int | None:
        return parse_url(f"amqp://h/?{option}&store=sqlite:///x.db").notice_ttl_ms

    assert (ttl(""), ttl("notice_ttl=0.25"), ttl("notice_ttl=0")) == (1000, 250, None)
    with pytest.raises(ConfigurationError, match="or 0 for never"):
        ttl("notice_ttl=soon")


def test_bad_options_are_refused() -> None:
    bad = ("max_priority=0", "publish_timeout=-1", "dead_max=x", "prefix=", "notice_ttl=-1")
    for option in bad:
        with pytest.raises(ConfigurationError):
            parse_url(f"amqp://h/?{option}&store=sqlite:///x.db")


def test_delay_buckets_are_never_early_and_at_most_1_percent_late() -> None:
    buckets = set()
    for delay in [1, 9, 10, 11, 999, 1000, 1001, 1500, 2_000, 59_999, 3_600_000, 86_400_000]:
        bucket = bucket_ms(delay)
        buckets.add(bucket)
        assert bucket >= delay
        assert bucket - delay <= max(10, delay * 0.01), (delay, bucket)
    # the grid is coarse enough that a day of distinct delays needs few queues
    assert len({bucket_ms(d) for d in range(1000, 86_400_000, 997)}) < 1200


def test_every_contract_method_is_implemented() -> None:
    """The contract grows; a method the backend lacks must fail here, not at run time."""
    tree = ast.parse(CONTRACT.read_text())
    [protocol] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Backend"]
    names = [f.name for f in protocol.body if isinstance(f, ast.AsyncFunctionDef)]
    for backend in (StoredBackend, StorelessBackend):
        assert [n for n in names if not hasattr(backend, n)] == [], backend


# -- on the broker ---------------------------------------------------------------------------


async def ready_messages(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    queue = await channel.declare_queue(name, passive=True)
    count = queue.declaration_result.message_count
    return int(count or 0)


async def test_an_enqueue_publishes_one_persistent_notification(
    ab: StoredBackend, channel: aio_pika.abc.AbstractChannel, queue_name: str, backend_url: str
) -> None:
    app = App(backend_url)
    try:
        await app.queue(queue_name).add("task", {"n": 1})
        name = work_queue(ab.settings, queue_name)
        assert await ready_messages(channel, name) == 1
    finally:
        await app.close()


async def test_a_notification_no_consumer_takes_within_notice_ttl_is_dropped_not_the_job(
    ab: StoredBackend, channel: aio_pika.abc.AbstractChannel, queue_name: str, backend_url: str
) -> None:
    """After a burst, the broker holds notifications of jobs the store has long handed
    out (it drains faster than the broker delivers); expired (after ``notice_ttl``, 1 s
    by default), they are not delivered at all. The job itself is in the store, and the
    next claim finds it."""
    app = App(backend_url)
    ran: list[int] = []

    @app.job(queue=queue_name)
    async def task(ctx: JobContext, n: int) -> None:
        ran.append(n)

    try:
        await app.queue(queue_name).add_bulk({"name": "task", "data": {"n": n}} for n in range(3))
        name = work_queue(ab.settings, queue_name)
        assert await ready_messages(channel, name) == 3
        await until(lambda: _equal(ready_messages(channel, name), 0), 5, "the broker to drop them")
        await app.worker([queue_name], 5, burst=True, handle_signals=False).run()
        assert sorted(ran) == [0, 1, 2]
    finally:
        await app.close()


async def _equal(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_a_delayed_job_wakes_a_worker_at_its_due_time(
    backend_url: str, queue_name: str
) -> None:
    """Through a TTL bucket and the dead-letter exchange, no plugin: within ~1 %. (Its
    delay is longer than ``notice_ttl``: a delayed notification does not expire.)"""
    app = App(backend_url)
    started: list[float] = []

    @app.job(queue=queue_name)
    async def later(ctx: JobContext) -> None:
        started.append(time.monotonic())

    # a long idle wait: only the broker's notification can wake the worker in time
    worker = app.worker([queue_name], 2, idle_wait_s=30.0, handle_signals=False)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.3)
        enqueued = time.monotonic()
        await later.enqueue(delay=1.5)
        await until(lambda: _true(bool(started)), 10, "the delayed job to run")
        late = started[0] - (enqueued + 1.5)
        assert -0.02 <= late <= 0.015 * 1.5 + 0.1, f"ran {late:+.3f} s from its due time"
    finally:
        worker.stop(now=True)
        await asyncio.wait_for(task, 30)
        await app.close()


async def _true(value: bool) -> bool:
    return value


def spawn_worker(
    url: str, queue: str, *, lease_s: float = 2.0, concurrency: int = 10, grace_s: float = 30.0
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "worker_proc.py"),
            url,
            queue,
            f"--lease-s={lease_s}",
            f"--concurrency={concurrency}",
            f"--grace-s={grace_s}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def stop_workers(workers: list[subprocess.Popen[str]]) -> None:
    """SIGTERM every worker still running, then wait for each (killed past 20 s)."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


@pytest.mark.slow
async def test_a_worker_killed_with_sigkill_gives_its_deliveries_back_and_loses_no_job(
    ab: StoredBackend, channel: aio_pika.abc.AbstractChannel, backend_url: str, queue_name: str
) -> None:
    lease_s = 2.0
    app = App(backend_url)

    @app.job(queue=queue_name)
    async def hold(ctx: JobContext, seconds: float) -> None:
        return None  # the survivor finishes at once

    jobs = await app.queue(queue_name).add_bulk(
        {"name": "hold", "data": {"seconds": 60}} for _ in range(5)
    )
    name = work_queue(ab.settings, queue_name)
    doomed = spawn_worker(backend_url, queue_name, lease_s=lease_s)
    try:

        async def all_active() -> bool:
            return (await app.queue(queue_name).counts())["active"] == 5

        await until(all_active, 10, "the doomed worker to take every job")
        # the worker holds the five deliveries unacked: none is ready on the broker
        assert await ready_messages(channel, name) == 0
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)

        async def redelivered() -> bool:
            return await ready_messages(channel, name) == 5

        await until(redelivered, 10, "the broker to requeue the killed worker's deliveries")
        survivor = app.worker(
            [queue_name], 5, lease_s=lease_s, stall_check_s=0.2, handle_signals=False
        )
        task = asyncio.create_task(survivor.run())
        try:

            async def all_completed() -> bool:
                return (await app.queue(queue_name).counts())["completed"] == 5

            await until(all_completed, 15, "the survivor to finish the killed worker's jobs")
        finally:
            survivor.stop(now=True)
            await asyncio.wait_for(task, 30)
        for job in jobs:
            record = await job.refresh()
            assert record.state is JobState.COMPLETED
            assert record.stalls == 1
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
        await app.close()


@pytest.mark.slow
async def test_three_worker_processes_share_one_queue_and_run_each_job_once(
    backend_url: str, queue_name: str
) -> None:
    app = App(backend_url)
    total = 300
    workers = [spawn_worker(backend_url, queue_name) for _ in range(3)]
    try:
        jobs = await app.queue(queue_name).add_bulk(
            {"name": "mark", "data": {"n": n, "seconds": 0.02}} for n in range(total)
        )

        async def all_completed() -> bool:
            return (await app.queue(queue_name).counts())["completed"] == total

        await until(all_completed, 60, "three workers to finish every job")
        pids = []
        for job in jobs:
            record = await job.refresh()
            assert record.state is JobState.COMPLETED and record.attempts == 1
            pids.append(record.result_value)
        assert set(pids) <= {w.pid for w in workers}
        assert len(set(pids)) == 3, "every worker process took a share"
        counts = await app.queue(queue_name).counts()
        assert counts["active"] == counts["waiting"] == 0
    finally:
        stop_workers(workers)
        await app.close()


# -- a broker restart (a test-owned node) -----------------------------------------------------


def have_own_node() -> bool:
    import shutil

    return shutil.which("rabbitmq-server") is not None and os.geteuid() == 0


@pytest.mark.slow
@pytest.mark.skipif(not have_own_node(), reason="needs rabbitmq-server and root (to run a node)")
async def test_a_broker_restart_loses_no_job_and_the_worker_resumes_consuming(
    queue_name: str,
) -> None:
    """The node is this test's own (own ports and data), stopped and started again: its
    durable queues survive, the robust connection comes back, the consumers resume (the
    worker's idle wait is 30 s, so only a broker wake-up finishes the jobs in time), and
    a publish while it is down raises a clear error after ``publish_timeout``."""
    from conftest import REDIS_HOST, REDIS_PORT, require_server, shared_redis_url
    from shigoto.errors import BackendUnavailable

    from .servers import amqp_url, temporary_node

    require_server("Redis", REDIS_HOST, REDIS_PORT)
    node = temporary_node()
    node.start()
    url = amqp_url(shared_redis_url("amqp"), port=node.port, vhost="/", publish_timeout="1")
    app = App(url)
    done: list[int] = []

    @app.job(queue=queue_name)
    async def tick(ctx: JobContext, n: int) -> None:
        done.append(n)

    worker = app.worker([queue_name], 5, idle_wait_s=30.0, handle_signals=False)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)
        await app.queue(queue_name).add_bulk({"name": "tick", "data": {"n": n}} for n in range(5))
        await until(lambda: _true(len(done) == 5), 10, "the jobs before the restart")

        node.stop()
        with pytest.raises(BackendUnavailable, match="publish_timeout"):
            await tick.enqueue(n=99)  # stored in the record store, its wake-up refused
        node.start()

        await until(lambda: _true(99 in done), 40, "the job published during the outage")
        await app.queue(queue_name).add_bulk(
            {"name": "tick", "data": {"n": n}} for n in range(5, 10)
        )
        took = await until(lambda: _true(len(done) == 11), 20, "the jobs after the restart")
        assert took < 10, f"jobs after the restart waited {took:.1f} s"
        assert sorted(done) == [*range(10), 99]
    finally:
        worker.stop(now=True)
        await asyncio.wait_for(task, 30)
        await app.close()
        node.stop()


async def test_a_routed_job_lands_in_every_queue_bound_to_a_matching_pattern(
    ab: StoredBackend, queue_name: str
) -> None:
    """Topic exchange: ``orders.*`` and ``orders.created`` both match ``orders.created``;
    only ``orders.*`` matches ``orders.paid``; nothing matches ``refunds.x``."""
    from shigoto.backends.contract import NewJob
    from shigoto.job import JobOptions

    every, created_only = f"{queue_name}-all", f"{queue_name}-created"
    await ab.bind_route(every, "orders.*")
    await ab.bind_route(created_only, "orders.created")

    def job(job_id: str) -> NewJob:
        return NewJob(job_id, "", "task", b'{"n":1}', JobOptions(), created_ms=1, ready_ms=1)

    await ab.route("orders.created", job("o1"))
    await ab.route("orders.paid", job("o2"))
    with pytest.raises(ConfigurationError, match="no queue is bound"):
        await ab.route("refunds.x", job("o3"))

    async def claimed(queue: str, want: int) -> list[str]:
        ids: list[str] = []
        deadline = time.monotonic() + 5
        while len(ids) < want and time.monotonic() < deadline:
            # claim first, as a worker does: its limit sets the consumer's prefetch
            got = await ab.claim(queue, limit=10, worker_id="w", lease_ms=30_000, now_ms=2)
            ids += [c.record.id for c in got]
            await ab.wait_for_work([queue], 0.2)
        return sorted(ids)

    assert await claimed(every, 2) == ["o1", "o2"]
    assert await claimed(created_only, 1) == ["o1"]
    record = await ab.get(created_only, "o1")
    assert record is not None and record.queue == created_only and record.payload == b'{"n":1}'
