"""RabbitMQ alone (``amqp://…`` without ``store=``): the message is the job.

Jobs flow (confirmed publishes, delays through TTL buckets, retries with backoff, dead
jobs in ``<queue>.dead``, a killed worker's jobs redelivered and counted as stalls up to
``max_stalls``), and everything that needs job records is declared absent and refused
with an error that says how to get it."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from typing import Any

import aio_pika
import msgspec
import pytest

from shigoto import App, JobContext
from shigoto.backends import open_backend
from shigoto.backends.amqp import CapabilityAbsent, StorelessBackend
from shigoto.backends.amqp.settings import parse_url
from shigoto.backends.amqp.topology import dead_queue, work_queue
from shigoto.backends.contract import DeadFilter, Lease, NewJob
from shigoto.job import JobOptions, JobRecord, JobState

from .test_amqp import ready_messages, spawn_worker, stop_workers, until

HINT = r"add \?store=redis://"


@pytest.fixture
async def bare(bare_url: str) -> Any:
    backend = open_backend(bare_url)
    assert isinstance(backend, StorelessBackend)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def bare_channel(bare_url: str) -> Any:
    connection = await aio_pika.connect(parse_url(bare_url).broker_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


def job(queue: str, job_id: str, **options: Any) -> NewJob:
    return NewJob(job_id, queue, "task", b'{"n":1}', JobOptions(**options), 1, 1)


async def claim(backend: StorelessBackend, queue: str, limit: int = 10) -> list[Any]:
    return await backend.claim(queue, limit=limit, worker_id="w", lease_ms=30_000, now_ms=1)


async def test_store_less_declares_what_needs_records_absent_and_says_how_to_get_it(
    bare: StorelessBackend, queue_name: str
) -> None:
    capabilities = bare.capabilities
    assert not capabilities.job_records and not capabilities.idempotency
    assert not capabilities.explicit_time and not capabilities.metrics
    assert capabilities.routing and capabilities.durable and capabilities.multi_host
    for call in (
        bare.get(queue_name, "x"),
        bare.list_jobs(queue_name, JobState.DEAD),
        bare.queues(),
        bare.cancel(queue_name, "x", now_ms=1),
        bare.set_paused(queue_name, True),
        bare.list_dead(queue_name, DeadFilter()),
        bare.register_schedules(["nightly"], now_ms=1),
        bare.read_metrics(queue_name, resolution="minute", since_ms=0, until_ms=1),
    ):
        with pytest.raises(CapabilityAbsent, match=HINT):
            await call
    with pytest.raises(CapabilityAbsent, match="dedup key"):
        await bare.enqueue([msgspec.structs.replace(job(queue_name, "d"), dedup_key="k")], 1)


async def test_the_queue_api_refuses_lookups_with_the_same_clear_error(
    bare_url: str, queue_name: str
) -> None:
    app = App(bare_url, audit=False)
    try:
        added = await app.queue(queue_name).add("task", {"n": 1})
        assert added.created
        with pytest.raises(CapabilityAbsent, match="looking a job up by id"):
            await app.queue(queue_name).get_job(added.id)
        with pytest.raises(CapabilityAbsent, match="dedup key"):
            await app.queue(queue_name).add("task", {"n": 2}, dedup_key="once")
        assert (await app.queue(queue_name).limits())["rate_limit"] is None
    finally:
        await app.close()


async def test_the_message_carries_the_job_and_its_attempts_and_release_keeps_them(
    bare: StorelessBackend, queue_name: str
) -> None:
    [done] = await bare.enqueue([job(queue_name, "j1", attempts=3, priority=2)], 1)
    assert (done.id, done.created, done.state) == ("j1", True, JobState.WAITING)
    [first] = await claim(bare, queue_name)
    record = first.record
    assert (record.id, record.state, record.attempts, record.data) == (
        "j1",
        JobState.ACTIVE,
        1,
        {"n": 1},
    )
    assert record.options.attempts == 3 and record.priority == 2
    lease = Lease(queue_name, "j1", first.token)
    assert [s.held for s in await bare.extend([lease], lease_ms=1, now_ms=1)] == [True]
    assert await bare.release([lease], now_ms=1) == [True]
    assert [s.held for s in await bare.extend([lease], lease_ms=1, now_ms=1)] == [False]
    [again] = await claim(bare, queue_name)
    assert again.record.attempts == 1, "a released attempt is not counted"
    assert again.record.stalls == 0, "nor is it a stall: released, not redelivered"
    assert again.token != first.token


async def test_retries_wait_in_delay_buckets_and_a_dead_job_lands_whole_in_dead(
    bare_url: str, bare_channel: aio_pika.abc.AbstractChannel, queue_name: str
) -> None:
    app = App(bare_url, audit=False)
    starts: list[tuple[int, float]] = []

    @app.job(queue=queue_name, attempts=3, backoff=0.2)
    async def fails(ctx: JobContext) -> None:
        starts.append((ctx.attempt, time.monotonic()))
        raise ConnectionError(f"refused on attempt {ctx.attempt}")

    try:
        added = await fails.enqueue()
        worker = app.worker([queue_name], 2, burst=True, handle_signals=False, idle_wait_s=0.05)
        await asyncio.wait_for(worker.run(), 20)
        assert [a for a, _ in starts] == [1, 2, 3]
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(starts)]
        assert all(gap >= 0.2 - 0.01 for gap in gaps), gaps
        dead_name = dead_queue(parse_url(bare_url), queue_name)
        dead_queue_ = await bare_channel.declare_queue(dead_name, passive=True)
        dead = await dead_queue_.get(timeout=5, fail=False)
        assert dead is not None
        await dead.ack()
        record = msgspec.json.decode(dead.body, type=JobRecord)
        assert (record.id, record.state, record.reason) == (
            added.id,
            JobState.DEAD,
            "retries_exhausted",
        )
        assert record.attempts == 3
        assert [e.message for e in record.errors] == [f"refused on attempt {n}" for n in (1, 2, 3)]
    finally:
        await app.close()


async def test_progress_is_refused_but_the_job_still_completes(
    bare_url: str, queue_name: str
) -> None:
    app = App(bare_url, audit=False)
    seen: list[str] = []

    @app.job(queue=queue_name, attempts=1)
    async def reports(ctx: JobContext) -> str:
        try:
            await ctx.update_progress(50)
        except CapabilityAbsent as exc:
            seen.append(str(exc))
        return "done"

    try:
        await reports.enqueue()
        worker = app.worker([queue_name], 1, burst=True, handle_signals=False, idle_wait_s=0.05)
        await asyncio.wait_for(worker.run(), 20)
        assert worker.processed == 1
        assert len(seen) == 1 and "job progress" in seen[0]
    finally:
        await app.close()


@pytest.mark.slow
async def test_a_worker_killed_with_sigkill_has_its_jobs_redelivered_and_run(
    bare_url: str, bare_channel: aio_pika.abc.AbstractChannel, queue_name: str
) -> None:
    """No store, no lease expiry: the killed worker's connection closes, RabbitMQ puts
    its five unacked deliveries back, and a survivor runs them at once."""
    app = App(bare_url, audit=False)
    ran: list[tuple[str, int]] = []

    @app.job(queue=queue_name)
    async def hold(ctx: JobContext, seconds: float) -> None:
        ran.append((ctx.job_id, ctx.job.stalls))

    name = work_queue(parse_url(bare_url), queue_name)
    try:
        added = await app.queue(queue_name).add_bulk(
            {"name": "hold", "data": {"seconds": 60}} for _ in range(5)
        )
        doomed = spawn_worker(bare_url, queue_name)
        try:

            async def all_taken() -> bool:
                return await ready_messages(bare_channel, name) == 0

            await until(all_taken, 10, "the doomed worker to take every job")
            await asyncio.sleep(0.2)
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(10)
        finally:
            if doomed.poll() is None:
                doomed.kill()
                doomed.wait(10)

        async def redelivered() -> bool:
            return await ready_messages(bare_channel, name) == 5

        await until(redelivered, 10, "the broker to requeue the killed worker's deliveries")
        survivor = app.worker([queue_name], 5, burst=True, handle_signals=False, idle_wait_s=0.05)
        took = time.monotonic()
        await asyncio.wait_for(survivor.run(), 20)
        assert time.monotonic() - took < 5
        assert sorted(i for i, _ in ran) == sorted(j.id for j in added)
        assert all(stalls >= 1 for _, stalls in ran), "redeliveries are reported as stalls"
    finally:
        await app.close()


async def claim_some(backend: StorelessBackend, queue: str, want: int) -> list[Any]:
    """Claim until ``want`` jobs are held (a job queued again arrives asynchronously)."""
    got: list[Any] = []
    deadline = time.monotonic() + 5
    while len(got) < want and time.monotonic() < deadline:
        got += await claim(backend, queue, want - len(got))
    return got


async def hold_then_die(url: str, queue: str) -> Any:
    """Claim a job on a connection of its own, then drop the connection unacked — what
    a killed worker's connection does (its deliveries come back, marked redelivered)."""
    holder = open_backend(url)
    assert isinstance(holder, StorelessBackend)
    await holder.connect()
    try:
        [claimed] = await claim_some(holder, queue, 1)
    finally:
        await holder.close()
    return claimed


async def dead_records(channel: aio_pika.abc.AbstractChannel, url: str, queue: str) -> list[Any]:
    dead = await channel.declare_queue(dead_queue(parse_url(url), queue), passive=True)
    records = []
    while (message := await dead.get(timeout=5, fail=False)) is not None:
        await message.ack()
        records.append(msgspec.json.decode(message.body, type=JobRecord))
    return records


async def test_a_redelivered_job_counts_as_a_stall_and_goes_dead_past_max_stalls(
    bare: StorelessBackend,
    bare_url: str,
    bare_channel: aio_pika.abc.AbstractChannel,
    queue_name: str,
) -> None:
    """Its holder's channel closed before the ack: the next claim counts a stall and
    queues the job again with the count in its header; the second stall is one more
    than max_stalls=1, so the job is published to .dead (reason stalled_too_often)."""
    await bare.enqueue([job(queue_name, "s1", max_stalls=1, attempts=5)], 1)
    first = (await hold_then_die(bare_url, queue_name)).record
    assert (first.id, first.stalls, first.attempts, first.errors) == ("s1", 0, 1, [])
    record = (await hold_then_die(bare_url, queue_name)).record
    assert (record.id, record.stalls, record.attempts) == ("s1", 1, 1), "not an attempt"
    assert [e.error_type for e in record.errors] == ["Stalled"]
    assert "stopped mid-run" in record.errors[0].message

    async def redelivered() -> bool:
        return await ready_messages(bare_channel, work_queue(bare.settings, queue_name)) == 1

    await until(redelivered, 5, "the broker to requeue the dropped delivery")
    assert await claim(bare, queue_name, 1) == [], "buried, not run"
    [dead] = await dead_records(bare_channel, bare_url, queue_name)
    assert (dead.id, dead.state, dead.reason, dead.stalls, dead.attempts) == (
        "s1",
        JobState.DEAD,
        "stalled_too_often",
        2,
        1,
    )
    assert [e.error_type for e in dead.errors] == ["Stalled", "Stalled"]
    assert await ready_messages(bare_channel, work_queue(parse_url(bare_url), queue_name)) == 0


async def test_closing_gives_buffered_jobs_back_without_counting_a_stall(
    bare: StorelessBackend,
    bare_url: str,
    bare_channel: aio_pika.abc.AbstractChannel,
    queue_name: str,
) -> None:
    """Deliveries a consumer buffered but never started are published again unchanged
    at close, not requeued (a requeue is marked redelivered): with max_stalls=0 a
    single counted stall would send them to .dead."""
    await bare.enqueue([job(queue_name, f"b{n}", max_stalls=0) for n in range(3)], 1)
    other = open_backend(bare_url)
    assert isinstance(other, StorelessBackend)
    await other.connect()
    try:
        await other.broker.consume([queue_name], prefetch=5)

        async def all_buffered() -> bool:
            return other.broker.buffered(queue_name) == 3

        await until(all_buffered, 5, "the other consumer to buffer the three jobs")
    finally:
        await other.close()
    taken = await claim_some(bare, queue_name, 3)
    assert sorted(c.record.id for c in taken) == ["b0", "b1", "b2"]
    assert all(c.record.stalls == 0 and c.record.attempts == 1 for c in taken)
    assert await dead_records(bare_channel, bare_url, queue_name) == []


@pytest.mark.slow
async def test_a_job_that_kills_its_worker_every_time_ends_dead_as_stalled(
    bare_url: str, bare_channel: aio_pika.abc.AbstractChannel, queue_name: str, tmp_path: Any
) -> None:
    """Real processes, real SIGKILLs: the handler kills its own worker. With
    max_stalls=1 it runs twice (the second run counted as stall 1), and the third
    delivery goes to .dead with reason stalled_too_often; a normal job alongside
    completes, and the last worker lives on."""
    app = App(bare_url, audit=False)
    runs = tmp_path / "runs.log"
    workers = [spawn_worker(bare_url, queue_name, concurrency=1) for _ in range(3)]
    try:
        [normal] = await app.queue(queue_name).add_bulk(
            [{"name": "mark", "data": {"n": 1, "log": str(runs)}}]
        )
        killer = await app.queue(queue_name).add(
            "suicide", {"log": str(runs), "seconds": 0.1}, max_stalls=1
        )

        async def buried() -> bool:
            return (
                await ready_messages(bare_channel, dead_queue(parse_url(bare_url), queue_name)) > 0
            )

        await until(buried, 20, "the job that kills its worker to go dead")
        [dead] = await dead_records(bare_channel, bare_url, queue_name)
        assert (dead.id, dead.reason, dead.stalls) == (killer.id, "stalled_too_often", 2)
        assert [e.error_type for e in dead.errors] == ["Stalled", "Stalled"]
        lines = [line.split() for line in runs.read_text().splitlines()]
        assert [line[0] for line in lines if line[0] == killer.id] == [killer.id] * 2
        stalls_seen = [int(line[3]) for line in lines if line[0] == killer.id]
        assert stalls_seen == [0, 1], "the second run knew it was stall 1"
        assert [line[0] for line in lines if line[0] == normal.id] == [normal.id]
        alive = [w for w in workers if w.poll() is None]
        assert len(alive) == 1 and all(
            w.returncode == -signal.SIGKILL for w in workers if w not in alive
        )
        assert await ready_messages(bare_channel, work_queue(parse_url(bare_url), queue_name)) == 0
    finally:
        stop_workers(workers)
        await app.close()


@pytest.mark.slow
async def test_a_gracefully_stopped_worker_gives_its_job_back_uncounted(
    bare: StorelessBackend,
    bare_url: str,
    bare_channel: aio_pika.abc.AbstractChannel,
    queue_name: str,
) -> None:
    """SIGTERM with no grace: the running job is released (published again unchanged,
    then acked), so even with max_stalls=0 it is not a stall and waits for the next
    worker."""
    app = App(bare_url, audit=False)
    name = work_queue(parse_url(bare_url), queue_name)
    worker = spawn_worker(bare_url, queue_name, concurrency=1, grace_s=0)
    try:
        added = await app.queue(queue_name).add("hold", {"seconds": 60}, max_stalls=0)

        async def taken() -> bool:
            return await ready_messages(bare_channel, name) == 0

        await until(taken, 10, "the worker to take the job")
        await asyncio.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        await app.close()
    [back] = await claim_some(bare, queue_name, 1)
    assert (back.record.id, back.record.stalls, back.record.attempts) == (added.id, 0, 1)
    assert back.record.errors == []
    assert await dead_records(bare_channel, bare_url, queue_name) == []


async def test_a_busy_drain_counts_no_stall_when_the_worker_widens_its_window(
    bare_url: str, queue_name: str
) -> None:
    """A worker's claims ask for more deliveries than its first window while finished
    jobs wait for their acks, so it widens the window. It used to cancel and restart its
    consumer for that, and the quorum queue handed some deliveries that were on their
    way back, marked redelivered: each counted as a stall of a job that never ran
    (33 in a 20,000-job drain)."""
    app = App(bare_url, audit=False)
    stalls: list[int] = []

    @app.job(queue=queue_name)
    async def noop(ctx: JobContext) -> None:
        stalls.append(ctx.job.stalls)

    try:
        await app.queue(queue_name).add_bulk({"name": "noop"} for _ in range(3000))
        worker = app.worker([queue_name], 50, burst=True, handle_signals=False, idle_wait_s=0.2)
        await asyncio.wait_for(worker.run(), 60)
    finally:
        await app.close()
    assert len(stalls) == 3000
    assert sum(stalls) == 0


async def test_routing_works_without_a_store(bare: StorelessBackend, queue_name: str) -> None:
    every, paid_only = f"{queue_name}-all", f"{queue_name}-paid"
    await bare.bind_route(every, "orders.#")
    await bare.bind_route(paid_only, "orders.*.paid")
    await bare.route("orders.eu.paid", job("", "o1"))
    await bare.route("orders.eu.created", job("", "o2"))

    async def ids(queue: str, want: int) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + 5
        while len(got) < want and time.monotonic() < deadline:
            got += [c.record.id for c in await claim(bare, queue)]
        return sorted(got)

    assert await ids(every, 2) == ["o1", "o2"]
    assert await ids(paid_only, 1) == ["o1"]


def test_the_cli_says_what_is_absent_instead_of_failing(bare_url: str) -> None:
    from click.testing import CliRunner

    from shigoto.cli.main import cli

    runner = CliRunner()
    listed = runner.invoke(cli, ["stats", "--url", bare_url])
    assert listed.exit_code != 0
    assert "cannot list queues: name them with -q QUEUE" in listed.output
    counted = runner.invoke(cli, ["stats", "-q", "emails", "--json", "--url", bare_url])
    assert counted.exit_code == 0, counted.output
    data = msgspec.json.decode(counted.output)
    assert data["queues"]["emails"]["waiting"] == 0
    assert "without a record store" in data["note"]
    jobs = runner.invoke(cli, ["jobs", "list", "-q", "emails", "--url", bare_url])
    assert jobs.exit_code != 0 and "listing jobs by state needs a record store" in jobs.output
    assert "Traceback" not in jobs.output


def test_the_dashboard_says_what_is_absent_instead_of_crashing(bare_url: str) -> None:
    import warnings

    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from shigoto.dashboard import create_app

    app = App(bare_url, audit=False)
    with TestClient(create_app(app, insecure_no_auth=True)) as client:
        page = client.get("/")
        assert page.status_code < 500
        assert "listing queues needs a record store" in page.text
        assert "?store=redis://" in page.text
        api = client.get("/api/overview")
        assert 400 <= api.status_code < 500
        assert "needs a record store" in api.text
        assert client.portal is not None
        client.portal.call(app.close)  # on the client's loop, before it closes


async def test_a_nacked_publish_raises_at_once_and_is_not_published_again(
    bare: StorelessBackend, bare_channel: aio_pika.abc.AbstractChannel, queue_name: str
) -> None:
    """Pipelined publishing keeps a confirm per message: a queue that refuses messages
    (full, ``reject-publish``) nacks them, and the caller gets an error, not a drop."""
    from shigoto.backends.amqp.broker import Nacked, Outgoing

    full = f"{bare.settings.prefix}.{queue_name}.full"
    await bare_channel.declare_queue(
        full,
        durable=True,
        arguments={"x-max-length": 1, "x-overflow": "reject-publish", "x-expires": 60_000},
    )

    async def into_full(item: Outgoing) -> str:
        return full

    bare.broker._target = into_full  # type: ignore[method-assign]
    started = time.monotonic()
    with pytest.raises(Nacked, match="refused"):
        await bare.broker.publish(Outgoing(queue_name, b"{}") for _ in range(3))
    assert time.monotonic() - started < 5, "a nack is not retried until publish_timeout"
    assert await ready_messages(bare_channel, full) == 1


@pytest.mark.slow
async def test_three_store_less_worker_processes_share_one_queue_and_run_each_job_once(
    bare_url: str, queue_name: str, tmp_path: Any
) -> None:
    """Prefetch = concurrency: no process hoards the queue, and without crashes every
    job runs exactly once (each run is logged to a file: there are no stored results)."""
    app = App(bare_url, audit=False)
    total = 300
    log = tmp_path / "runs.log"
    workers = [spawn_worker(bare_url, queue_name) for _ in range(3)]
    try:
        added = await app.queue(queue_name).add_bulk(
            {"name": "mark", "data": {"n": n, "seconds": 0.02, "log": str(log)}}
            for n in range(total)
        )

        async def all_ran() -> bool:
            return log.exists() and len(log.read_text().splitlines()) >= total

        await until(all_ran, 60, "three store-less workers to run every job")
        await asyncio.sleep(0.3)  # a duplicate run would show up by now
        runs = [line.split() for line in log.read_text().splitlines()]
        assert sorted(job_id for job_id, _ in runs) == sorted(j.id for j in added)
        pids = {int(pid) for _, pid in runs}
        assert pids == {w.pid for w in workers}, "every worker process took a share"
    finally:
        stop_workers(workers)
        await app.close()
