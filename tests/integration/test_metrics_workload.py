"""Metrics recorded by real workers, checked against a known workload."""

from __future__ import annotations

import asyncio

import msgspec

from shigoto import App, JobContext
from shigoto.backends.contract import MINUTE_MS
from shigoto.clock import FrozenClock
from shigoto.job import JobRecord, JobState
from shigoto.metrics import (
    BOUNDS_MS,
    MetricsRecorder,
    WorkerInfo,
    histogram,
    latency,
    quantile_ms,
    worker_health,
)

QUEUE = "work"


async def test_a_completion_whose_lease_was_lost_is_not_counted_as_completed(app: App) -> None:
    """A job recovered elsewhere while its handler ran did not complete here: the
    backend refuses the completion, and the metrics count only the run that did."""
    runs = 0

    @app.job(queue=QUEUE)
    async def slow(ctx: JobContext) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:  # as if its lease had expired: recovered while its handler runs
            backend = await app.backend()
            await backend.recover_stalled(QUEUE, now_ms=app.clock.now_ms() + 10**9, limit=1)

    await slow.enqueue()
    await app.worker([QUEUE], 1, burst=True, handle_signals=False, idle_wait_s=0.05).run()

    snap = await app.metrics(QUEUE).snapshot()
    assert runs == 2
    assert (snap.completed, snap.completed_total) == (1, 1)


async def test_90_completed_10_failed_gives_a_10_percent_failure_rate(app: App) -> None:
    @app.job(queue=QUEUE, attempts=1)
    async def ok(ctx: JobContext, slow: bool) -> None:
        if slow:
            await asyncio.sleep(0.2)

    @app.job(queue=QUEUE, attempts=1)
    async def broken(ctx: JobContext) -> None:
        raise RuntimeError("boom")

    queue = app.queue(QUEUE)
    await queue.add_bulk({"name": "ok", "data": {"slow": n < 10}} for n in range(90))
    await queue.add_bulk({"name": "broken", "data": {}} for _ in range(10))
    await app.worker([QUEUE], concurrency=20, burst=True, handle_signals=False).run()

    snap = await app.metrics(QUEUE).snapshot()
    assert (snap.completed, snap.failed, snap.dead_new) == (90, 10, 10)
    assert snap.failure_rate == 0.1
    assert snap.success_rate == 0.9
    assert snap.backlog == 0 and snap.dead == 10 and snap.completed_total == 90
    assert (snap.jobs["broken"].dead_count, snap.jobs["ok"].dead_count) == (10, 0)

    # Per-name counts of jobs now (Backend.counts_by_name), beside the window's outcomes.
    await queue.add("ok", {"slow": False})
    await queue.add("ok", {"slow": False}, delay=600)
    await queue.add("broken", {}, delay=600)
    await queue.add("broken", {})
    await queue.add("broken", {})
    snap = await app.metrics(QUEUE).snapshot()
    assert snap.names_complete is True
    now = {
        name: (job.waiting, job.delayed, job.active, job.dead_count)
        for name, job in snap.jobs.items()
    }
    assert now == {"ok": (1, 1, 0, 0), "broken": (2, 1, 0, 10)}
    assert snap.processing.count == 100
    # 10 of 100 attempts slept 200 ms: the p95 lies in the (100, 250] ms bucket,
    # the median among the instant ones.
    assert snap.processing.p95_s is not None and 0.1 < snap.processing.p95_s <= 0.25
    assert snap.processing.p50_s is not None and snap.processing.p50_s <= 0.05
    assert snap.wait.count == 100 and snap.wait.avg_s is not None
    assert snap.jobs["ok"].completed == 90 and snap.jobs["broken"].failure_rate == 1.0
    points = await app.metrics(QUEUE).series(last=2)
    assert sum(p.completed for p in points) == 90


async def test_metrics_off_records_nothing(app: App) -> None:
    @app.job(queue=QUEUE)
    async def ok(ctx: JobContext) -> None:
        return None

    await app.queue(QUEUE).add("ok", {})
    await app.worker([QUEUE], burst=True, handle_signals=False, metrics=False).run()
    snap = await app.metrics(QUEUE).snapshot()
    assert snap.completed == 0 and snap.completed_total == 1


async def test_granularity_guard_counts_jobs_over_their_target(app: App) -> None:
    @app.job(queue=QUEUE, target_s=0.05)
    async def chunky(ctx: JobContext) -> None:
        await asyncio.sleep(0.1)

    @app.job(queue=QUEUE, target_s=0.05, long_running=True)
    async def import_all(ctx: JobContext) -> None:
        await asyncio.sleep(0.1)

    await app.queue(QUEUE).add_bulk(
        [{"name": "chunky", "data": {}}] * 3 + [{"name": "import_all", "data": {}}] * 2
    )
    await app.worker([QUEUE], concurrency=5, burst=True, handle_signals=False).run()
    snap = await app.metrics(QUEUE).snapshot()
    assert snap.jobs["chunky"].slow == 3
    assert snap.jobs["import_all"].slow == 0
    assert snap.slow == 3


async def test_a_running_worker_reports_liveness_and_goes_away(app: App) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @app.job(queue=QUEUE)
    async def hold(ctx: JobContext) -> None:
        started.set()
        await release.wait()

    await app.queue(QUEUE).add("hold", {})
    worker = app.worker([QUEUE], concurrency=2, handle_signals=False, name="w-live")
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    for _ in range(100):
        health = await worker_health(app)
        if health and health[0].info.running == 1:
            break
        await asyncio.sleep(0.05)
    [h] = [h for h in await worker_health(app) if h.info.id == "w-live"]
    assert h.status == "ok" and h.info.queues == [QUEUE] and h.info.concurrency == 2
    release.set()
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert [h for h in await worker_health(app) if h.info.id == "w-live"] == []


async def test_a_worker_that_stopped_claiming_is_reported_stuck(backend_url: str) -> None:
    clock = FrozenClock()
    app = App(backend_url, clock=clock)
    try:
        backend = await app.backend()
        await app.queue(QUEUE).add("x", {})
        info = WorkerInfo(
            id="w-stuck", host="h", pid=1, queues=[QUEUE], concurrency=4, running=0,
            processed=10, failed=0, started_ms=clock.now_ms() - 600_000,
            beat_ms=clock.now_ms(), last_claim_ms=clock.now_ms() - 120_000,
        )  # fmt: skip
        await backend.worker_beat(
            info.id, msgspec.json.encode(info), expires_ms=clock.now_ms() + 30_000,
            now_ms=clock.now_ms(),
        )  # fmt: skip
        [h] = await worker_health(app)
        assert h.status == "stuck" and h.idle_s == 120
        await app.queue(QUEUE).pause()
        [h] = await worker_health(app)
        assert h.status == "idle"
    finally:
        await app.close()


def test_recorder_buckets_known_durations() -> None:
    recorder = MetricsRecorder(lambda name: 50)
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS
    for ms in range(1, 101):  # durations 1..100 ms, each waited 1 s
        record = JobRecord(
            id=str(ms), queue="q", name="n", payload=b"{}", options=msgspec.convert({}, _opts()),
            state=JobState.ACTIVE, priority=0, created_ms=t0, ready_ms=t0,
        )  # fmt: skip
        recorder.observe(record, t0 + 1000, t0 + 1000 + ms, "completed")
    [sample] = recorder.drain()
    values = sample.values
    assert values["completed"] == 100 and values["slow"] == 50
    assert values["run_ms"] == sum(range(1, 101))
    run = latency(values, "run")
    assert run.avg_s == 0.0505
    assert run.p95_s is not None and 0.05 < run.p95_s <= 0.1
    wait = latency(values, "wait")
    assert wait.avg_s == 1.0
    assert sum(histogram(values, "run")) == 100
    assert quantile_ms([0] * (len(BOUNDS_MS) + 1), 0.5) is None
    assert recorder.drain() == []


def _opts() -> type:
    from shigoto.job import JobOptions

    return JobOptions


async def test_prometheus_job_labels_are_capped(app: App) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from shigoto.exporter import render

    await app.queue(QUEUE).add("job0", {})  # the exporter lists queues that hold jobs
    backend = await app.backend()
    now = app.clock.now_ms()
    minute = now - now % MINUTE_MS
    from shigoto.backends.contract import MetricSample

    await backend.record_metrics(
        [MetricSample(QUEUE, f"job{n}", minute, {"completed": 10 - n}) for n in range(5)],
        now_ms=now,
    )
    text = (await render(app, max_job_labels=3)).decode()
    completed = {
        s.labels["job"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "shigoto_jobs_completed_total"
    }
    assert completed == {"job0": 10, "job1": 9, "other": 8 + 7 + 6}


async def test_prometheus_shows_jobs_per_name_and_state(app: App) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from shigoto.exporter import render

    queue = app.queue(QUEUE)
    for name in ("a", "a", "b"):
        await queue.add(name, {})
    await queue.add("b", {}, delay=600)
    text = (await render(app)).decode()
    per_job = {
        (s.labels["job"], s.labels["state"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "shigoto_job_jobs"
    }
    assert per_job[("a", "waiting")] == 2
    assert per_job[("b", "waiting")] == 1 and per_job[("b", "delayed")] == 1
    assert per_job[("a", "dead")] == 0


async def test_prometheus_counters_never_go_down_when_the_oldest_hour_is_pruned(
    backend_url: str,
) -> None:
    """Issue 6: the ``*_total`` counters come from lifetime totals, so pruning an hour
    bucket 30 days on does not make them drop (which Prometheus would read as a reset)."""
    from prometheus_client.parser import text_string_to_metric_families

    from shigoto.backends.contract import HOUR_RETENTION_MS, MetricSample
    from shigoto.exporter import render

    clock = FrozenClock()
    app = App(backend_url, clock=clock)
    try:
        await app.queue(QUEUE).add("job0", {})  # the exporter lists queues that hold jobs
        backend = await app.backend()

        async def record(completed: int) -> float:
            now = clock.now_ms()
            sample = MetricSample(QUEUE, "job0", now - now % MINUTE_MS, {"completed": completed})
            await backend.record_metrics([sample], now_ms=now)
            text = (await render(app)).decode()
            [value] = [
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "shigoto_jobs_completed_total"
            ]
            return value

        seen = [await record(5)]
        clock.advance((HOUR_RETENTION_MS + 2 * 3_600_000) / 1000)  # the first hour is pruned
        seen.append(await record(1))
        assert seen == [5, 6]
    finally:
        await app.close()
