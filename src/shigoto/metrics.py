"""Queue metrics: recorded by workers, stored in the backend, read by anyone.

Recording stays off the worker's critical path: a :class:`MetricsRecorder` adds each
finished attempt to in-memory counters keyed by (queue, job name, minute) — a few dict
updates — and a :class:`MetricsReporter` task flushes them to the backend about once a
second, one backend call per flush, together with the worker's liveness beat. The
backend keeps minute buckets for 24 hours and hour buckets for 30 days (see the
``metrics`` section of :mod:`shigoto.backends.contract`), so storage is bounded; the
same flush adds into per-queue lifetime totals (bounded by job names x fields) that
never go down, for monotonic counters.

Durations go into fixed histogram buckets (:data:`BOUNDS_MS`), so percentiles are
estimates: exact to the bucket, interpolated linearly inside it.

Reading: ``await app.metrics("email").snapshot()`` returns a :class:`QueueSnapshot`
(counts, rates over a window, processing and wait time) as typed data.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from .backends.contract import (
    HOUR_MS,
    MINUTE_MS,
    Backend,
    MetricBucket,
    MetricSample,
    Resolution,
)
from .clock import Seconds, to_ms
from .job import JobRecord, JobState

if TYPE_CHECKING:
    from .app import App
    from .worker import Worker

log = logging.getLogger(__name__)

BOUNDS_MS: tuple[int, ...] = (
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
    120_000, 300_000, 600_000, 1_800_000, 3_600_000,
)  # fmt: skip
"""Upper bounds (inclusive) of the duration histogram buckets; one more bucket holds
everything longer. Fixed, so buckets of different workers and minutes add up."""
DEFAULT_TARGET_S = 60.0
"""Granularity guard: a job should finish within this (the brief: under a minute)."""
DEFAULT_WINDOW_S = 300.0
FLUSH_S = 1.0
BEAT_S = 5.0
BEAT_TTL_S = 30.0
STUCK_AFTER_S = 60.0
MAX_PENDING = 10_000
"""Most (queue, name, minute) entries kept while the backend is unreachable."""

OUTCOMES = ("completed", "retried", "dead")


_RUN_FIELDS = tuple(f"run_{i}" for i in range(len(BOUNDS_MS) + 1))
_WAIT_FIELDS = tuple(f"wait_{i}" for i in range(len(BOUNDS_MS) + 1))
_FIELDS: tuple[str, ...] = ("completed", "retried", "dead", "failed", "slow", "run_ms", "wait_ms")
_FIELDS += _RUN_FIELDS + _WAIT_FIELDS
"""The counters of one (queue, name, minute), in the order of a recorder's cell."""
_INDEX = {name: index for index, name in enumerate(_FIELDS)}
_COMPLETED, _FAILED, _SLOW, _RUN_MS, _WAIT_MS = (
    _INDEX[f] for f in ("completed", "failed", "slow", "run_ms", "wait_ms")
)
_RUN_0, _WAIT_0 = _INDEX["run_0"], _INDEX["wait_0"]
_bucket = bisect.bisect_left
_SMALL = 1024
_SMALL_BUCKETS = bytes(_bucket(BOUNDS_MS, ms) for ms in range(_SMALL))
"""The bucket of each duration under ``_SMALL`` ms (most jobs and waits), read in one
index instead of a bisect call."""


# -- recording (in the worker) -----------------------------------------------------------


class _Cell:
    """The counters of one (queue, name, minute): ``values`` in the order of
    ``_FIELDS`` (indexing a list costs a fraction of looking a field name up in a
    dict), and the durations noted since the last :meth:`fold`, which files them into
    the histogram buckets and sums of ``values``.

    Why durations are noted first and filed later: filing one is a dozen operations
    in Python (two buckets, two sums, a clamp, the slow check), noting one is an
    append. A second's worth of no-op jobs holds a handful of distinct durations
    (whole milliseconds), which ``fold`` counts in C (``Counter``) and files once
    each: a worker doing tens of thousands of jobs a second pays for a few."""

    __slots__ = ("runs", "target", "values", "waits")

    def __init__(self, target: int | None) -> None:
        self.values = [0] * len(_FIELDS)
        self.target = target
        """The job name's slow target (ms), or None."""
        self.runs: list[int] = []
        self.waits: list[int] = []

    def fold(self) -> list[int]:
        """File the noted durations into ``values`` (negative ones, from clock skew
        between machines, count as 0); the counters."""
        values, target = self.values, self.target
        for ms, n in Counter(self.runs).items():
            ms = max(ms, 0)
            values[_RUN_0 + (_SMALL_BUCKETS[ms] if ms < _SMALL else _bucket(BOUNDS_MS, ms))] += n
            values[_RUN_MS] += ms * n
            if target is not None and ms > target:
                values[_SLOW] += n
        for ms, n in Counter(self.waits).items():
            ms = max(ms, 0)
            values[_WAIT_0 + (_SMALL_BUCKETS[ms] if ms < _SMALL else _bucket(BOUNDS_MS, ms))] += n
            values[_WAIT_MS] += ms * n
        self.runs, self.waits = [], []
        return values


class MetricsRecorder:
    """In-memory counters of finished attempts, drained by the reporter.

    ``completed`` (a batch of completions) and ``observe`` (one failed attempt) are
    the only calls on the hot path: no I/O, and per attempt a counter and two noted
    durations in the *cell* of its (queue, name, minute) (see :class:`_Cell`), turned
    into the sparse ``{field: count}`` of a :class:`MetricSample` once a second by
    :meth:`drain`.
    """

    def __init__(self, target_ms: Callable[[str], int | None]) -> None:
        self._target_ms = target_ms
        self._targets: dict[str, int | None] = {}
        self._pending: dict[tuple[str, str, int], _Cell] = {}
        self.last_claim_ms: int | None = None

    def _cell(self, key: tuple[str, str, int]) -> _Cell | None:
        """The cell of a key seen for the first time."""
        if len(self._pending) >= MAX_PENDING:
            return None  # backend unreachable for long: drop rather than grow
        name = key[1]
        if name in self._targets:
            target = self._targets[name]
        else:
            target = self._targets[name] = self._target_ms(name)
        cell = self._pending[key] = _Cell(target)
        return cell

    def observe(self, record: JobRecord, started_ms: int, ended_ms: int, outcome: str) -> None:
        """One attempt of ``record`` ended: ``completed``, ``retried`` or ``dead``."""
        self._count(((record, started_ms, ended_ms),), outcome)

    def completed(self, attempts: Iterable[tuple[JobRecord, int, int]]) -> None:
        """:meth:`observe` of each ``(record, started_ms, ended_ms)`` of a batch of
        completions, in one call: a worker writes its completions in batches, and the
        jobs of a batch mostly share their (queue, name, minute), whose cell is then
        found once per batch instead of once per job (a tuple built, hashed and looked
        up: about a third of what counting a job cost)."""
        self._count(attempts, "completed")

    def _count(self, attempts: Iterable[tuple[JobRecord, int, int]], outcome: str) -> None:
        index, failed = _INDEX[outcome], outcome != "completed"
        queue = name = ""
        minute = minute_ends = -1  # the current cell's minute: [minute, minute_ends)
        cell: _Cell | None = None
        for record, started_ms, ended_ms in attempts:
            if not minute <= ended_ms < minute_ends or record.name != name or record.queue != queue:
                queue, name = record.queue, record.name
                minute = ended_ms - ended_ms % MINUTE_MS
                minute_ends = minute + MINUTE_MS
                key = (queue, name, minute)
                cell = self._pending.get(key) or self._cell(key)
                if cell is not None:
                    values, note_run, note_wait = cell.values, cell.runs.append, cell.waits.append
            if cell is None:
                continue
            values[index] += 1
            if failed:
                values[_FAILED] += 1
            note_run(ended_ms - started_ms)
            note_wait(started_ms - record.ready_ms)

    def drain(self) -> list[MetricSample]:
        pending, self._pending = self._pending, {}
        return [
            MetricSample(
                queue=q,
                name=n,
                minute_ms=m,
                values={_FIELDS[i]: v for i, v in enumerate(cell.fold()) if v},
            )
            for (q, n, m), cell in pending.items()
        ]

    def restore(self, samples: Iterable[MetricSample]) -> None:
        """Put back samples whose flush failed (they are merged with newer counts)."""
        for sample in samples:
            key = (sample.queue, sample.name, sample.minute_ms)
            cell = self._pending.get(key) or self._cell(key)
            if cell is None:
                continue
            values = cell.values
            for name, value in sample.values.items():
                values[_INDEX[name]] += value


class WorkerInfo(msgspec.Struct, frozen=True):
    """A worker's liveness record (what ``shigoto stats`` shows per worker)."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    processed: int
    failed: int
    started_ms: int
    beat_ms: int
    last_claim_ms: int | None = None


_info_decoder = msgspec.json.Decoder(WorkerInfo)


class MetricsReporter:
    """The worker-side task: flush counters every ``FLUSH_S``, beat every ``BEAT_S``."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        app = worker.app

        def target_ms(name: str) -> int | None:
            target = app.job_targets.get(name, DEFAULT_TARGET_S)
            return None if target is None else to_ms(target)

        self.recorder = MetricsRecorder(target_ms)
        self._started_ms = app.clock.now_ms()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failing = False

    def start(self, backend: Backend) -> None:
        self._task = asyncio.create_task(self._loop(backend), name="shigoto-metrics")

    async def close(self, backend: Backend) -> None:
        """Stop the loop, write what is left, and tell readers this worker is gone."""
        self._stop.set()
        if self._task is not None:
            # Let a flush in progress finish (its samples are already drained).
            done, _ = await asyncio.wait({self._task}, timeout=5.0)
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush(backend)
        try:
            await backend.worker_gone(self.worker.id)
        except Exception:
            log.debug("could not remove the liveness record of %s", self.worker.id)

    async def _loop(self, backend: Backend) -> None:
        next_beat = 0.0
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            await self.flush(backend)
            if loop.time() >= next_beat:
                next_beat = loop.time() + BEAT_S
                await self.beat(backend)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), FLUSH_S)

    async def flush(self, backend: Backend) -> None:
        samples = self.recorder.drain()
        if not samples:
            return
        try:
            await backend.record_metrics(samples, now_ms=self.worker.app.clock.now_ms())
            self._failing = False
        except Exception as exc:
            self.recorder.restore(samples)
            if not self._failing:
                self._failing = True
                log.warning("metrics flush failed (%s: %s); will retry", type(exc).__name__, exc)

    def info(self) -> WorkerInfo:
        worker = self.worker
        return WorkerInfo(
            id=worker.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=list(worker.queues),
            concurrency=worker.concurrency,
            running=len(worker._running),
            processed=worker.processed,
            failed=worker.failed,
            started_ms=self._started_ms,
            beat_ms=worker.app.clock.now_ms(),
            last_claim_ms=self.recorder.last_claim_ms,
        )

    async def beat(self, backend: Backend) -> None:
        info = self.info()
        try:
            await backend.worker_beat(
                info.id,
                msgspec.json.encode(info),
                expires_ms=info.beat_ms + to_ms(BEAT_TTL_S),
                now_ms=info.beat_ms,
            )
        except Exception as exc:
            log.debug("worker beat failed: %s", exc)


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """A duration distribution in seconds; None where nothing was observed."""

    count: int = 0
    avg_s: float | None = None
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None


@dataclass(frozen=True, slots=True)
class JobMetrics:
    """Outcomes of one job name over the snapshot's window."""

    name: str
    completed: int = 0
    failed: int = 0
    """Failed attempts (``retried`` + ``dead``)."""
    retried: int = 0
    dead: int = 0
    slow: int = 0
    """Attempts that ran longer than the handler's target (granularity guard)."""
    processing: Latency = field(default_factory=Latency)
    wait: Latency = field(default_factory=Latency)
    waiting: int = 0
    """Jobs of this name waiting now (``Backend.counts_by_name``)."""
    delayed: int = 0
    active: int = 0
    dead_count: int = 0
    """Jobs of this name dead now (``dead`` above is the dead-letterings in the window)."""

    @property
    def failure_rate(self) -> float | None:
        total = self.completed + self.failed
        return self.failed / total if total else None


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """One queue now: counts from the backend, rates over the last ``window_s``."""

    queue: str
    at_ms: int
    window_s: float
    waiting: int
    delayed: int
    active: int
    dead: int
    completed_total: int
    paused: bool
    completed: int
    """Completed in the window."""
    failed: int
    """Failed attempts in the window."""
    retried: int
    dead_new: int
    slow: int
    processing: Latency
    wait: Latency
    oldest_waiting_s: float | None
    """How long the job at the head of the queue has been ready (None: none waiting)."""
    jobs: dict[str, JobMetrics]
    names_complete: bool = True
    """False when a state held more jobs than ``counts_by_name`` looks at, so the
    per-name waiting/delayed/active/dead counts cover only part of it."""

    @property
    def backlog(self) -> int:
        """Queue length: waiting + delayed (the brief's backlog)."""
        return self.waiting + self.delayed

    @property
    def failure_rate(self) -> float | None:
        total = self.completed + self.failed
        return self.failed / total if total else None

    @property
    def success_rate(self) -> float | None:
        rate = self.failure_rate
        return None if rate is None else 1.0 - rate

    @property
    def throughput_per_min(self) -> float:
        return (self.completed + self.failed) / (self.window_s / 60.0)

    @property
    def delay_s(self) -> float | None:
        """Average wait (enqueue → start) in the window; when no job started, how
        long the head of the queue has waited (a stuck queue still shows its delay)."""
        if self.wait.avg_s is not None:
            if self.oldest_waiting_s is not None:
                return max(self.wait.avg_s, self.oldest_waiting_s)
            return self.wait.avg_s
        return self.oldest_waiting_s


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket of a time series (charts)."""

    start_ms: int
    completed: int
    failed: int
    processing_avg_s: float | None
    wait_avg_s: float | None


def merge(buckets: Iterable[MetricBucket]) -> dict[str, dict[str, int]]:
    """Sum bucket values per job name."""
    out: dict[str, dict[str, int]] = {}
    for bucket in buckets:
        into = out.setdefault(bucket.name, {})
        for key, value in bucket.values.items():
            into[key] = into.get(key, 0) + value
    return out


def add_values(many: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for values in many:
        for key, value in values.items():
            out[key] = out.get(key, 0) + value
    return out


def histogram(values: dict[str, int], kind: str) -> list[int]:
    """Counts per bucket of ``BOUNDS_MS`` (plus the overflow bucket)."""
    return [values.get(f"{kind}_{i}", 0) for i in range(len(BOUNDS_MS) + 1)]


def quantile_ms(counts: Sequence[int], q: float) -> float | None:
    """Estimate a quantile from bucket counts, interpolating inside the bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            low = BOUNDS_MS[i - 1] if i > 0 else 0
            high = BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1] * 2
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return float(BOUNDS_MS[-1])


def latency(values: dict[str, int], kind: str) -> Latency:
    counts = histogram(values, kind)
    n = sum(counts)
    if not n:
        return Latency()

    def q(p: float) -> float | None:
        ms = quantile_ms(counts, p)
        return None if ms is None else ms / 1000

    return Latency(
        count=n,
        avg_s=values.get(f"{kind}_ms", 0) / n / 1000,
        p50_s=q(0.50),
        p95_s=q(0.95),
        p99_s=q(0.99),
    )


def job_metrics(
    name: str, values: dict[str, int], now: dict[JobState, int] | None = None
) -> JobMetrics:
    now = now or {}
    return JobMetrics(
        name=name,
        completed=values.get("completed", 0),
        failed=values.get("failed", 0),
        retried=values.get("retried", 0),
        dead=values.get("dead", 0),
        slow=values.get("slow", 0),
        processing=latency(values, "run"),
        wait=latency(values, "wait"),
        waiting=now.get(JobState.WAITING, 0),
        delayed=now.get(JobState.DELAYED, 0),
        active=now.get(JobState.ACTIVE, 0),
        dead_count=now.get(JobState.DEAD, 0),
    )


class QueueMetrics:
    """Metrics of one queue: ``app.metrics("email")``."""

    def __init__(self, app: App, queue: str) -> None:
        app.queue(queue)  # validates the name
        self.app = app
        self.queue = queue

    async def snapshot(self, window: Seconds = DEFAULT_WINDOW_S) -> QueueSnapshot:
        """Counts now, and outcomes and latencies over the last ``window`` (default 5
        min; minute buckets, so the window is rounded to whole minutes and includes
        the current, partial minute)."""
        backend = await self.app.backend()
        now = self.app.clock.now_ms()
        window_ms = max(MINUTE_MS, to_ms(window))
        since = now - now % MINUTE_MS - window_ms + MINUTE_MS
        buckets = await backend.read_metrics(
            self.queue, resolution="minute", since_ms=since, until_ms=now + 1
        )
        per_name = merge(buckets)
        total = add_values(per_name.values())
        counts = await backend.counts(self.queue)
        by_name = await backend.counts_by_name(self.queue)
        oldest: float | None = None
        if counts[JobState.WAITING]:
            head = await backend.list_jobs(self.queue, JobState.WAITING, limit=1)
            if head:
                oldest = max(0, now - head[0].ready_ms) / 1000
        return QueueSnapshot(
            queue=self.queue,
            at_ms=now,
            window_s=window_ms / 1000,
            waiting=counts[JobState.WAITING],
            delayed=counts[JobState.DELAYED],
            active=counts[JobState.ACTIVE],
            dead=counts[JobState.DEAD],
            completed_total=counts[JobState.COMPLETED],
            paused=await backend.is_paused(self.queue),
            completed=total.get("completed", 0),
            failed=total.get("failed", 0),
            retried=total.get("retried", 0),
            dead_new=total.get("dead", 0),
            slow=total.get("slow", 0),
            processing=latency(total, "run"),
            wait=latency(total, "wait"),
            oldest_waiting_s=oldest,
            jobs={
                name: job_metrics(name, per_name.get(name, {}), by_name.counts.get(name))
                for name in sorted(per_name.keys() | by_name.counts.keys())
            },
            names_complete=by_name.complete,
        )

    def snapshot_sync(self, window: Seconds = DEFAULT_WINDOW_S) -> QueueSnapshot:
        """Blocking twin of :meth:`snapshot`."""
        return self.app.portal.call(self.snapshot, window)

    async def series(self, resolution: Resolution = "minute", *, last: int = 60) -> list[Point]:
        """The last ``last`` buckets (oldest first, empty ones included): for charts."""
        width = MINUTE_MS if resolution == "minute" else HOUR_MS
        now = self.app.clock.now_ms()
        first = now - now % width - (last - 1) * width
        backend = await self.app.backend()
        buckets = await backend.read_metrics(
            self.queue, resolution=resolution, since_ms=first, until_ms=now + 1
        )
        by_start: dict[int, dict[str, int]] = {}
        for bucket in buckets:
            by_start[bucket.start_ms] = add_values(
                [by_start.get(bucket.start_ms, {}), bucket.values]
            )
        points = []
        for start in range(first, now + 1, width):
            values = by_start.get(start, {})
            run, wait = latency(values, "run"), latency(values, "wait")
            points.append(
                Point(
                    start,
                    values.get("completed", 0),
                    values.get("failed", 0),
                    run.avg_s,
                    wait.avg_s,
                )
            )
        return points

    async def totals(self) -> dict[str, dict[str, int]]:
        """Lifetime counters per job name (``Backend.read_metric_totals``): never pruned,
        so no value ever goes down — what the Prometheus exporter reports as counters
        and histograms."""
        backend = await self.app.backend()
        return await backend.read_metric_totals(self.queue)


# -- worker liveness ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """A live worker and the verdict on it: ``ok``, ``idle`` or ``stuck``."""

    info: WorkerInfo
    status: str
    idle_s: float
    """Seconds since the worker last claimed a job (or started, if it never did)."""


async def worker_health(app: App, *, stuck_after: Seconds = STUCK_AFTER_S) -> list[WorkerHealth]:
    """Every live worker. One that has free slots and has not claimed for
    ``stuck_after`` although one of its queues has waiting jobs (not paused) is
    ``stuck`` — alive but not consuming, e.g. after a bad reconnect."""
    backend = await app.backend()
    now = app.clock.now_ms()
    infos = [_info_decoder.decode(raw) for raw in await backend.list_workers(now_ms=now)]
    ready: dict[str, bool] = {}
    out = []
    for info in infos:
        idle_ms = now - (info.last_claim_ms or info.started_ms)
        status = "ok" if info.running else "idle"
        if info.running < info.concurrency and idle_ms > to_ms(stuck_after):
            for queue in info.queues:
                if queue not in ready:
                    counts = await backend.counts(queue)
                    ready[queue] = bool(counts[JobState.WAITING]) and not await backend.is_paused(
                        queue
                    )
                if ready[queue]:
                    status = "stuck"
                    break
        out.append(WorkerHealth(info, status, max(0, idle_ms) / 1000))
    return out


def describe(snapshot: QueueSnapshot) -> dict[str, Any]:
    """A snapshot as plain JSON-able data (``shigoto stats --json``, the dashboard)."""

    def lat(value: Latency) -> dict[str, Any]:
        return {
            "count": value.count,
            "avg_s": value.avg_s,
            "p50_s": value.p50_s,
            "p95_s": value.p95_s,
            "p99_s": value.p99_s,
        }

    return {
        "queue": snapshot.queue,
        "window_s": snapshot.window_s,
        "waiting": snapshot.waiting,
        "delayed": snapshot.delayed,
        "active": snapshot.active,
        "dead": snapshot.dead,
        "backlog": snapshot.backlog,
        "paused": snapshot.paused,
        "completed": snapshot.completed,
        "failed": snapshot.failed,
        "failure_rate": snapshot.failure_rate,
        "throughput_per_min": snapshot.throughput_per_min,
        "processing": lat(snapshot.processing),
        "wait": lat(snapshot.wait),
        "delay_s": snapshot.delay_s,
        "slow": {name: job.slow for name, job in snapshot.jobs.items() if job.slow},
        "jobs": {
            name: {
                "waiting": job.waiting,
                "delayed": job.delayed,
                "active": job.active,
                "dead": job.dead_count,
                "completed": job.completed,
                "failed": job.failed,
                "failure_rate": job.failure_rate,
                "processing": lat(job.processing),
            }
            for name, job in snapshot.jobs.items()
        },
        "jobs_complete": snapshot.names_complete,
    }
