"""Worker: claims jobs, runs handlers, records outcomes, and never drops a job.

Shape of a running worker (all tasks on one event loop, plus one heartbeat thread):

* **fetch loop** — claims at most as many jobs as it has free slots (no prefetch
  starvation), one backend call per queue per round; waits for work when idle.
* **one task per job** — runs the handler (async directly, ``def`` in a thread pool)
  under its timeout, then hands the outcome on.
* **ack loop** — completions are written in batches: while one batch is being written
  the next accumulates, so a busy worker pays one round trip for many jobs and an idle
  one adds no delay.
* **maintenance loop** — recovers stalled jobs (expired leases) of its queues.
* **heartbeat thread** — renews leases even when a handler blocks the loop.

Shutdown (SIGTERM/SIGINT, or :meth:`Worker.stop`): stop claiming, let running jobs
finish within ``shutdown_grace_s``, cancel the rest, write pending acks, then release
every lease still held back to ``waiting`` without counting an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
import traceback
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from .backends import open_backend
from .backends.contract import (
    Backend,
    Claimed,
    ClaimsOnWake,
    Completion,
    Lease,
    LeaseStatus,
)
from .batches import BatchTracker
from .clock import SystemClock, to_ms
from .context import JobCancelledError, JobContext, SyncJobContext
from .errors import ConfigurationError, LeaseLost, RateLimited, ShigotoError
from .events import Event, EventBus, EventType, Listener
from .isolation import ProcessCrashed, ProcessPool
from .job import AttemptError, DeadReason, JobRecord, JobState
from .retry import GiveUp, Retry, RetryAt, decide
from .security.audit import RunRecorder, adopt_actor
from .security.encryption import DecryptionError
from .telemetry import traced_attempt

if TYPE_CHECKING:
    from .app import App
    from .handler import JobHandler
    from .metrics import MetricsReporter

log = logging.getLogger(__name__)

ACK_BATCH = 500
STALL_LIMIT = 1000
MAX_MESSAGE = 2000
MAX_TRACEBACK = 16_000


class JobTimeout(ShigotoError):
    """The handler ran longer than the job's ``timeout``."""


class NoHandler(ShigotoError):
    """The worker has no handler registered for the job's name."""


class BadPayload(ShigotoError):
    """The stored job data could not be decoded, or the result could not be encoded."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Tuning knobs; the defaults suit jobs of seconds to minutes."""

    lease_s: float = 30.0
    """How long a claim stays valid without a heartbeat; a dead worker's jobs are
    recovered this long (plus ``stall_check_s``) after it stopped."""
    heartbeat_s: float | None = None
    """Lease renewal interval; default ``lease_s / 3``."""
    stall_check_s: float = 5.0
    shutdown_grace_s: float = 30.0
    idle_wait_s: float = 1.0
    """Longest single wait for new work before claiming again."""
    burst: bool = False
    """Stop once the queues hold no waiting or delayed jobs (for scripts and tests)."""
    name: str | None = None
    handle_signals: bool = True
    metrics: bool = True
    """Record metrics and a liveness beat into the backend (see :mod:`shigoto.metrics`)."""

    def __post_init__(self) -> None:
        for field in ("lease_s", "stall_check_s", "idle_wait_s"):
            if not getattr(self, field) > 0:
                raise ConfigurationError(f"worker {field} must be > 0, got {getattr(self, field)}")
        if self.heartbeat_s is not None and not 0 < self.heartbeat_s < self.lease_s:
            raise ConfigurationError(
                f"heartbeat_s must be > 0 and below lease_s ({self.lease_s}), "
                f"got {self.heartbeat_s}"
            )
        if self.shutdown_grace_s < 0:
            raise ConfigurationError(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")


class Worker:
    """Runs jobs from ``queues`` (listed in priority order) with ``concurrency`` slots."""

    def __init__(
        self, app: App, queues: list[str], *, concurrency: int, settings: WorkerSettings
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        for name in queues:
            app.queue(name)  # validates names
        self.app = app
        self.queues = list(dict.fromkeys(queues))
        self.concurrency = concurrency
        self.settings = settings
        self.id = settings.name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
        self.events = EventBus()
        self.processed = 0
        self.failed = 0
        self._lease_ms = to_ms(settings.lease_s)
        self._held: dict[str, Lease] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._contexts: dict[str, JobContext] = {}
        self._lost: set[Lease] = set()
        self._acks: list[tuple[Completion, JobRecord, Any, int]] = []
        """Completions to write: the attempt, its job, its result, when it ended."""
        self._acks_closed = False
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._slot = asyncio.Event()
        self._ack_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parked: asyncio.Task[int] | None = None
        """The idle wait-then-claim in progress (see :meth:`_wait_and_claim`)."""
        self._stop_before_start = (False, False)
        self._backend: Backend | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pool: ProcessPool | None = None
        self._heartbeat: Any = None
        self._outage_logged = False
        self._metrics: MetricsReporter | None = None
        self._runs = RunRecorder(app.audit, self.id)
        self._batches = BatchTracker(app.clock.now_ms, quiet_ms=self._lease_ms)

    def __repr__(self) -> str:
        return f"<Worker {self.id} queues={self.queues} concurrency={self.concurrency}>"

    def on(self, event: str, listener: Listener) -> Listener:
        """Subscribe to this worker's events (``completed``, ``failed``, ``dead``...)."""
        return self.events.on(event, listener)

    def stop(self, *, now: bool = False) -> None:
        """Ask the worker to stop gracefully (``now=True``: skip the grace period).

        Safe to call from any thread or a signal handler.
        """
        loop = self._loop
        if loop is None:  # not running yet: run() will stop as soon as it starts
            self._stop_before_start = (True, now or self._stop_before_start[1])
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._request_stop, now)

    def _request_stop(self, now: bool) -> None:
        if self._stopping.is_set() and not now:
            log.warning("worker %s: stopping now, cancelling running jobs", self.id)
            now = True
        self._stopping.set()
        if self._parked is not None:
            self._parked.cancel()  # an idle wait ends now, not at its timeout
        if now:
            self._force.set()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped (signal, :meth:`stop`, or an empty queue in burst mode)."""
        from .heartbeat import Heartbeat

        self._loop = asyncio.get_running_loop()
        if self._stop_before_start[0]:
            self._request_stop(self._stop_before_start[1])
        self._backend = await self.app.backend()
        self._runs.start(self._backend)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="shigoto-job")
        heartbeat_s = self.settings.heartbeat_s or self.settings.lease_s / 3
        self._heartbeat = Heartbeat(
            lambda: open_backend(self.app.url),
            self.app.clock,
            lease_ms=self._lease_ms,
            interval_s=heartbeat_s,
            on_status=self._statuses_from_thread,
        )
        self._heartbeat.start()
        signals = self._install_signals()
        log.info(
            "worker %s started: queues=%s concurrency=%d", self.id, self.queues, self.concurrency
        )
        maintenance = asyncio.create_task(self._maintenance_loop(), name="shigoto-maintenance")
        acker = asyncio.create_task(self._ack_loop(), name="shigoto-acks")
        if self.settings.metrics:
            from .metrics import MetricsReporter

            self._metrics = MetricsReporter(self)
            self._metrics.start(self._backend)
        try:
            await self._fetch_loop()
        finally:
            await asyncio.shield(self._shutdown(maintenance, acker, signals))

    async def _shutdown(
        self, maintenance: asyncio.Task[None], acker: asyncio.Task[None], signals: list[int]
    ) -> None:
        self._stopping.set()
        maintenance.cancel()
        if self._running:
            grace = self.settings.shutdown_grace_s
            log.info(
                "worker %s: waiting up to %.0f s for %d running job(s)",
                self.id,
                grace,
                len(self._running),
            )
            tasks = list(self._running.values())
            await self._until(asyncio.wait(tasks, timeout=grace), self._force)
            pending = [t for t in self._running.values() if not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._acks_closed = True
        self._ack_event.set()
        await acker
        if self._held:
            note_ms = self.app.clock.now_ms()
            leases = list(self._held.values())
            log.warning(
                "worker %s: releasing %d unfinished job(s) back to their queues",
                self.id,
                len(leases),
            )
            note = AttemptError(
                attempt=0,
                error_type="WorkerShutdown",
                message=f"worker {self.id} stopped before the job finished; released, "
                "attempt not counted",
                traceback="",
                worker_id=self.id,
                started_ms=None,
                ended_ms=note_ms,
            )
            try:
                await self._require_backend().release(leases, now_ms=note_ms, note=note)
            except Exception:
                log.exception("release failed; the jobs will be recovered when leases expire")
            self._held.clear()
        if self._metrics is not None:
            await self._metrics.close(self._require_backend())
        await self._runs.close()
        self._heartbeat.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            await self._pool.close()
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        log.info("worker %s stopped: %d processed, %d failed", self.id, self.processed, self.failed)

    def _install_signals(self) -> list[int]:
        if (
            not self.settings.handle_signals
            or threading.current_thread() is not threading.main_thread()
        ):
            return []
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
            installed.append(sig)
        return installed

    def _on_signal(self, sig: int) -> None:
        log.warning(
            "worker %s: %s received, stopping gracefully (send again to stop now)",
            self.id,
            signal.Signals(sig).name,
        )
        self._request_stop(now=self._stopping.is_set())

    # -- fetching ----------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        backend = self._require_backend()
        waker = self._claims_on_wake(backend)
        after_wait = False  # the next claim rides behind the blocking wait (waker)
        failures = 0
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot.clear()
                await self._until(self._slot.wait(), self._stopping)
                continue
            if self.settings.burst:
                self._slot.clear()  # a job ending from here on ends the wait below
            try:
                if after_wait and waker is not None:
                    claimed = await self._wait_and_claim(waker, free)
                else:
                    claimed = await self._claim(backend, free)
            except Exception as exc:
                failures += 1
                after_wait = False
                self._log_outage(exc)
                await self._until(asyncio.sleep(min(5.0, 0.05 * 2**failures)), self._stopping)
                continue
            if failures:
                log.warning("worker %s: backend reachable again", self.id)
                failures, self._outage_logged = 0, False
            after_wait = False
            if claimed:
                await asyncio.sleep(0)  # let the jobs just started run before the next call
                # Fewer than asked: the queues are drained. A backend with blocking waits
                # wakes us for anything added after this claim, so wait right away
                # instead of paying a round trip for an empty claim first.
                drained = claimed < free and backend.capabilities.blocking_wait
                if not drained or self.settings.burst:
                    continue
            elif self.settings.burst:
                if self._running or self._acks:
                    # Nothing to claim while jobs still run or their completions are
                    # being written: look again when one of those ends, not after a whole
                    # idle wait (a drained burst worker used to exit up to 1 s late).
                    await self._until(self._a_job_ends(), self._stopping)
                    continue
                if await self._queues_empty():
                    return
            if waker is not None:
                after_wait = True
                continue
            await self._until(
                backend.wait_for_work(self.queues, self.settings.idle_wait_s), self._stopping
            )

    async def _a_job_ends(self) -> None:
        """Until a running job ends or a batch of completions is written, or at most
        ``idle_wait_s`` (jobs others add meanwhile are found by the next claim)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot.wait(), self.settings.idle_wait_s)

    def _claims_on_wake(self, backend: Backend) -> ClaimsOnWake | None:
        """The backend, when its claim can ride behind its blocking wait: one queue
        (the claim is per queue), the wall clock (such a claim reads the server's
        time), and not burst mode (which checks for an empty queue between the two)."""
        if (
            isinstance(backend, ClaimsOnWake)
            and len(self.queues) == 1
            and type(self.app.clock) is SystemClock
            and not self.settings.burst
        ):
            return backend
        return None

    async def _wait_and_claim(self, waker: ClaimsOnWake, free: int) -> int:
        """Park in the backend's wait-then-claim until work comes or the worker stops.

        The wait runs in a task of its own that :meth:`_request_stop` cancels, and is
        awaited directly: waiting on it and on the stop event together (``_until``) cost
        two more tasks and two more event-loop turns between the jobs' arrival and their
        start, a hot path at low load (enqueue → start latency)."""
        if self._stopping.is_set():
            return 0
        assert self._loop is not None
        task = self._loop.create_task(self._park(waker, free))
        self._parked = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task(self._loop)
            if task.cancelled() and current is not None and not current.cancelling():
                return 0  # the wait was cancelled by _request_stop, not this task
            raise
        finally:
            self._parked = None

    async def _park(self, waker: ClaimsOnWake, free: int) -> int:
        """The parked wait, and the start of what it claimed in the same event-loop
        turn as its reply: started after this task ended instead, the jobs waited one
        more turn for the fetch loop to resume (enqueue → start latency)."""
        batch = await waker.wait_and_claim(
            self.queues[0],
            limit=free,
            worker_id=self.id,
            lease_ms=self._lease_ms,
            timeout_s=self.settings.idle_wait_s,
            clock=self.app.clock.now_ms,
        )
        if batch:
            self._start(batch)
        return len(batch)

    async def _claim(self, backend: Backend, free: int) -> int:
        total = 0
        for queue in self.queues:
            batch = await backend.claim(
                queue,
                limit=free - total,
                worker_id=self.id,
                lease_ms=self._lease_ms,
                now_ms=self.app.clock.now_ms(),
            )
            if batch:
                self._start(batch)
            total += len(batch)
            if total >= free:
                break
        return total

    async def _queues_empty(self) -> bool:
        # Completions still to be written can enqueue work (a batch's follow-up), so
        # look at them before the counts: checked after, a flush finishing while the
        # counts are read would hide the job it just enqueued.
        if self._acks:
            return False
        backend = self._require_backend()
        for queue in self.queues:
            counts = await backend.counts(queue)
            pending = counts[JobState.WAITING] + counts[JobState.DELAYED]
            if pending and not await backend.is_paused(queue):
                return False
        return not self._acks

    def _start(self, batch: list[Claimed]) -> None:
        """One task per claimed job; the heartbeat learns of the batch under one lock.

        Tasks are not named: a name is formatted and set per job, and costs more than
        a no-op handler (the job id is in every log record instead)."""
        leases = []
        assert self._loop is not None
        create_task = self._loop.create_task  # asyncio.create_task asks for the loop each time
        for claimed in batch:
            record = claimed.record
            lease = Lease(record.queue, record.id, claimed.token)
            self._held[record.id] = lease
            leases.append((lease, record.options.timeout_s))
            self._running[record.id] = create_task(self._execute(record, lease))
        self._heartbeat.track_many(leases)
        self._runs.started((c.record for c in batch), self.app.clock.now_ms())

    # -- running one job ---------------------------------------------------------------

    async def _execute(self, record: JobRecord, lease: Lease) -> None:
        clock = self.app.clock
        started_ms = clock.now_ms()
        handler = self.app.handlers.get(record.name)
        metrics = self._metrics
        if metrics is not None:
            metrics.recorder.last_claim_ms = started_ms
        actor = record.options.actor
        adopt_actor(actor)  # this task only: what the handler enqueues carries the actor
        try:
            if self._wants(EventType.ACTIVE):
                await self._emit(EventType.ACTIVE, record)
            try:
                result = await self._call(record, lease, handler)
                encoded = None if result is None else _encode_result(result)
            except asyncio.CancelledError:
                if lease in self._lost:
                    log.warning(
                        "job %s cancelled: its lease was lost",
                        record.id,
                        extra={"job_id": record.id, "queue": record.queue},
                    )
                    self._forget(lease)
                    self._runs.note("job.end", record.queue, record.id, actor, outcome="lease_lost")
                    return
                self._runs.note("job.end", record.queue, record.id, actor, outcome="released")
                raise  # shutdown: the lease stays in _held and is released in bulk
            except Exception as exc:
                await asyncio.shield(self._fail(record, lease, exc, started_ms, handler))
            else:
                # Its metrics, event and job.end entry follow once the completion is
                # written (_ack_loop): a job whose lease was lost meanwhile is not counted.
                completion = Completion(
                    lease, encoded, started_ms, record.options.remove_on_complete
                )
                ended_ms = clock.now_ms() if metrics is not None else started_ms
                self._acks.append((completion, record, result, ended_ms))
                self._ack_event.set()
        finally:
            # The same job may already run again here (retried with no backoff and
            # claimed anew): leave the newer attempt's entries alone.
            ctx = self._contexts.get(record.id)
            if ctx is not None and ctx.lease == lease:
                del self._contexts[record.id]
            if self._running.get(record.id) is asyncio.current_task(self._loop):
                del self._running[record.id]
            self._slot.set()

    @traced_attempt
    async def _call(self, record: JobRecord, lease: Lease, handler: JobHandler[Any] | None) -> Any:
        if handler is None:
            known = ", ".join(sorted(self.app.handlers)) or "none"
            raise NoHandler(
                f"no handler registered for job name {record.name!r} on worker {self.id} "
                f"(known: {known}); deploy the handler, then redrive the job"
            )
        try:
            data = record.data
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            # not valid UTF-8 / JSON, or nested deeper than the decoder goes
            raise BadPayload(f"stored data of job {record.id} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadPayload(f"stored data of job {record.id} is not a JSON object")
        data = self.app.security.reveal(record.name, record.payload, data)
        ctx = JobContext(self, record, lease)
        self._contexts[record.id] = ctx
        handler_ctx: JobContext | SyncJobContext = (
            ctx if handler.is_async else SyncJobContext(ctx, asyncio.get_running_loop())
        )
        assert self._executor is not None
        if handler.isolation == "process":
            if self._pool is None:
                self._pool = ProcessPool(self.concurrency, worker_id=self.id)
            call = self._pool.run(handler, ctx, data)
        else:
            call = handler.run_with(handler_ctx, data, self._executor)
        timeout_s = record.options.timeout_s
        if timeout_s is None:
            return await call
        try:
            async with asyncio.timeout(timeout_s) as scope:
                return await call
        except TimeoutError:
            if scope.expired():
                raise JobTimeout(f"job exceeded its timeout of {timeout_s:g} s") from None
            raise

    async def _fail(
        self,
        record: JobRecord,
        lease: Lease,
        exc: BaseException,
        started_ms: int,
        handler: JobHandler[Any] | None,
    ) -> None:
        if isinstance(exc, RateLimited):
            if self._require_backend().capabilities.rate_limits:
                await self._postpone(record, lease, exc)
                return
            # a backend without the rate-limit section: an ordinary retry (counted)
            exc = Retry(exc.retry_after_s, f"rate limited: {exc}")
        self.failed += 1
        now = self.app.clock.now_ms()
        error = AttemptError(
            attempt=record.attempts,
            error_type=_type_name(exc),
            message=str(exc)[:MAX_MESSAGE],
            traceback="".join(traceback.format_exception(exc))[-MAX_TRACEBACK:],
            worker_id=self.id,
            started_ms=started_ms,
            ended_ms=now,
        )
        extra = {"job_id": record.id, "queue": record.queue}
        if isinstance(exc, JobCancelledError):
            # The backend turns a give-back of a cancel-flagged job into `cancelled`.
            log.info("job %s (%s) stopped after cancellation", record.id, record.name, extra=extra)
            self._runs.note(
                "job.end", record.queue, record.id, record.options.actor, outcome="cancelled"
            )
            try:
                await self._require_backend().release([lease], now_ms=now, note=error)
                await self._batches.report(
                    self._require_backend(), [(record.queue, record.id, JobState.CANCELLED)]
                )
            except Exception:
                log.exception("job %s: could not record its cancellation", record.id, extra=extra)
            self._forget(lease)
            return
        decision = self._decide(record, exc, handler)
        self._runs.note(
            "job.end",
            record.queue,
            record.id,
            record.options.actor,
            outcome="retry" if isinstance(decision, RetryAt) else "dead",
            reason=None if isinstance(decision, RetryAt) else str(decision.reason),
            error=error.error_type,
        )
        if self._metrics is not None:
            outcome = "retried" if isinstance(decision, RetryAt) else "dead"
            self._metrics.recorder.observe(record, started_ms, now, outcome)
        if self._wants(EventType.FAILED):
            await self._emit(EventType.FAILED, record, error=error)
        backend = self._require_backend()
        try:
            if isinstance(decision, RetryAt):
                log.info(
                    "job %s (%s) attempt %d failed: %s: %s; retrying in %.1f s",
                    record.id,
                    record.name,
                    record.attempts,
                    error.error_type,
                    error.message,
                    decision.delay_s,
                    extra=extra,
                )
                await backend.retry(
                    lease, run_at_ms=now + to_ms(decision.delay_s), error=error, now_ms=now
                )
                if self._wants(EventType.RETRYING):
                    await self._emit(
                        EventType.RETRYING, record, error=error, delay_s=decision.delay_s
                    )
            else:
                log.warning(
                    "job %s (%s) is dead (%s) after %d attempt(s): %s: %s",
                    record.id,
                    record.name,
                    decision.reason,
                    record.attempts,
                    error.error_type,
                    error.message,
                    extra=extra,
                )
                await backend.dead_letter(lease, reason=decision.reason, error=error, now_ms=now)
                if self._wants(EventType.DEAD):
                    await self._emit(EventType.DEAD, record, error=error, reason=decision.reason)
                await self._batches.report(backend, [(record.queue, record.id, JobState.DEAD)])
        except LeaseLost:
            log.warning(
                "job %s: lease lost before its failure was recorded; whoever holds "
                "the job now decides its fate",
                record.id,
                extra=extra,
            )
        except Exception:
            log.exception(
                "job %s: could not record its failure; it will be recovered when its lease expires",
                record.id,
                extra=extra,
            )
        self._forget(lease)

    async def _postpone(self, record: JobRecord, lease: Lease, exc: RateLimited) -> None:
        """The service told the handler to slow down: back to ``delayed`` for
        ``retry_after`` without counting the attempt, holding the job's group or queue
        with it when asked (see shigoto.limits)."""
        now = self.app.clock.now_ms()
        extra = {"job_id": record.id, "queue": record.queue}
        log.info(
            "job %s (%s) rate limited by its service: %s; again in %.1f s%s",
            record.id,
            record.name,
            exc,
            exc.retry_after_s,
            " (its group or queue held as long)" if exc.hold else "",
            extra=extra,
        )
        self._runs.note(
            "job.end", record.queue, record.id, record.options.actor, outcome="rate_limited"
        )
        try:
            await self._require_backend().postpone(
                lease, run_at_ms=now + to_ms(exc.retry_after_s), hold=exc.hold, now_ms=now
            )
        except LeaseLost:
            log.warning("job %s: lease lost before its postponement was recorded", record.id)
        except Exception:
            log.exception(
                "job %s: could not postpone it; it will be recovered when its lease expires",
                record.id,
                extra=extra,
            )
        self._forget(lease)

    def _decide(
        self, record: JobRecord, exc: BaseException, handler: JobHandler[Any] | None
    ) -> RetryAt | GiveUp:
        if isinstance(exc, NoHandler):
            return GiveUp(DeadReason.NO_HANDLER)
        if isinstance(exc, BadPayload):
            return GiveUp(DeadReason.BAD_PAYLOAD)
        if isinstance(exc, DecryptionError):
            return GiveUp(DeadReason.DECRYPTION_FAILED)
        should_retry = handler.should_retry if handler else None
        options = record.options
        try:
            decision = decide(exc, record.attempts, options.attempts, options.backoff, should_retry)
        except Exception:
            log.exception("should_retry of %s raised; using the attempts limit", record.name)
            decision = decide(exc, record.attempts, options.attempts, options.backoff)
        if (
            isinstance(decision, GiveUp)
            and decision.reason == DeadReason.RETRIES_EXHAUSTED
            and isinstance(exc, JobTimeout)
        ):
            return GiveUp(DeadReason.TIMEOUT)
        if (
            isinstance(decision, GiveUp)
            and decision.reason == DeadReason.RETRIES_EXHAUSTED
            and isinstance(exc, ProcessCrashed)
        ):
            return GiveUp(DeadReason.CRASHED)
        return decision

    def _forget(self, lease: Lease) -> None:
        """Drop a finished attempt's lease; a newer claim of the same job stays held."""
        self._forget_many((lease,))

    def _forget_many(self, leases: Sequence[Lease]) -> None:
        held, lost = self._held, self._lost
        for lease in leases:
            if held.get(lease.job_id) == lease:
                del held[lease.job_id]
            if lost:
                lost.discard(lease)
        self._heartbeat.untrack_many(leases)

    # -- acknowledgements --------------------------------------------------------------

    async def _ack_loop(self) -> None:
        backend = self._require_backend()
        failures = 0
        while True:
            if not self._acks:
                if self._acks_closed:
                    return
                self._ack_event.clear()
                await self._ack_event.wait()
                continue
            batch = self._acks[:ACK_BATCH]
            try:
                oks = await backend.complete([c for c, _, _, _ in batch], self.app.clock.now_ms())
            except Exception as exc:
                failures += 1
                self._log_outage(exc)
                if self._acks_closed and failures > 5:
                    log.error(
                        "worker %s: giving up on %d completion(s); their jobs will be "
                        "recovered and run again",
                        self.id,
                        len(self._acks),
                    )
                    self._acks.clear()
                    return
                await asyncio.sleep(min(5.0, 0.05 * 2**failures))
                continue
            failures = 0
            done = [record for (_, record, _, _), ok in zip(batch, oks, strict=True) if ok]
            # Before the acks go: a burst worker must not see "nothing left" while the
            # follow-up of a batch this completion finished is still being stored.
            await self._batches.report(
                backend, [(record.queue, record.id, JobState.COMPLETED) for record in done]
            )
            del self._acks[: len(batch)]
            self._slot.set()  # a burst worker waiting for its completions looks again
            self._forget_many([completion.lease for completion, _, _, _ in batch])
            now_ms = self.app.clock.now_ms()
            if self._metrics is not None:
                self._metrics.recorder.completed(
                    (record, completion.started_ms, ended_ms)
                    for (completion, record, _, ended_ms), ok in zip(batch, oks, strict=True)
                    if ok
                )
            self._runs.completed(done, now_ms)
            self.processed += len(done)
            kind = EventType.COMPLETED
            buses = [b for b in (self.app.events, self.events) if b.has_listeners(kind)]
            events = []
            for (completion, record, result, _), ok in zip(batch, oks, strict=True):
                if ok:
                    if buses:
                        detail = {"result": result, "duration_ms": now_ms - completion.started_ms}
                        events.append(
                            Event(kind, record.queue, record.id, record.name,
                                  record.attempts, self.id, detail)
                        )  # fmt: skip
                else:
                    log.warning(
                        "job %s finished but its lease was lost; its result was not recorded",
                        record.id,
                        extra={"job_id": record.id, "queue": record.queue},
                    )
                    actor = record.options.actor
                    self._runs.note("job.end", record.queue, record.id, actor, outcome="lease_lost")
            for bus in buses:
                await bus.emit_all(events)

    # -- housekeeping ------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        backend = self._require_backend()
        while True:
            for queue in self.queues:
                try:
                    recovered = await backend.recover_stalled(
                        queue, now_ms=self.app.clock.now_ms(), limit=STALL_LIMIT
                    )
                except Exception as exc:
                    self._log_outage(exc)
                    continue
                for item in recovered:
                    log.warning(
                        "job %s stalled (lease expired) and went %s",
                        item.job_id,
                        item.state.value,
                        extra={"job_id": item.job_id, "queue": queue},
                    )
                    if self._wants(EventType.STALLED):
                        await self._emit_raw(
                            Event(
                                EventType.STALLED,
                                queue,
                                item.job_id,
                                worker_id=self.id,
                                detail={"state": item.state.value},
                            )
                        )
                finished = [(queue, i.job_id, i.state) for i in recovered if i.state.is_final]
                await self._batches.report(backend, finished)
                await self._batches.sweep(backend, queue)
            await asyncio.sleep(self.settings.stall_check_s * random.uniform(0.8, 1.2))

    def _statuses_from_thread(self, statuses: list[tuple[Lease, LeaseStatus]]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._apply_statuses, statuses)

    def _apply_statuses(self, statuses: list[tuple[Lease, LeaseStatus]]) -> None:
        for lease, status in statuses:
            if self._held.get(status.job_id) != lease:
                continue  # that attempt is over (or the job was claimed again since)
            ctx = self._contexts.get(status.job_id)
            if status.cancel_requested and ctx is not None and not ctx.cancelled:
                ctx.cancelled = True
                log.info("job %s: cancellation requested", status.job_id)
            if not status.held:
                if status.job_id not in self._running:
                    # The handler already finished and its outcome is being written;
                    # that write is what voided the lease. A real loss is reported by
                    # the write itself (complete -> False, retry -> LeaseLost).
                    continue
                log.error(
                    "job %s: lease lost while running (blocked too long, or recovered "
                    "by another worker); abandoning it",
                    status.job_id,
                )
                self._lost.add(lease)
                del self._held[status.job_id]
                task = self._running.get(status.job_id)
                if task is not None:
                    task.cancel()

    # -- called by JobContext ----------------------------------------------------------

    async def _update_progress(self, ctx: JobContext, encoded: bytes, value: Any) -> None:
        await self._require_backend().update_progress(ctx.lease, encoded)
        if self._wants(EventType.PROGRESS):
            await self._emit(EventType.PROGRESS, ctx.job, progress=value)

    async def _extend_lock(self, ctx: JobContext, lease_ms: int | None) -> None:
        [status] = await self._require_backend().extend(
            [ctx.lease], lease_ms=lease_ms or self._lease_ms, now_ms=self.app.clock.now_ms()
        )
        if not status.held:
            raise LeaseLost(f"job {ctx.job_id}: lease lost, cannot extend it")
        if status.cancel_requested:
            ctx.cancelled = True

    # -- small helpers -----------------------------------------------------------------

    def _require_backend(self) -> Backend:
        if self._backend is None:
            raise ShigotoError("worker is not running")
        return self._backend

    def _wants(self, kind: EventType) -> bool:
        return self.events.has_listeners(kind) or self.app.events.has_listeners(kind)

    def _event(self, kind: EventType, record: JobRecord, detail: dict[str, Any]) -> Event:
        return Event(kind, record.queue, record.id, record.name, record.attempts, self.id, detail)

    async def _emit(self, kind: EventType, record: JobRecord, **detail: Any) -> None:
        await self._emit_raw(self._event(kind, record, detail))

    async def _emit_raw(self, *events: Event) -> None:
        """Emit ``events`` (all of one kind) to the buses that listen to it. Runs for
        every job someone listens to: a batch's completed events are one call, sync
        listeners cost no coroutine (dispatch), and a bus without listeners is skipped."""
        kind = events[0].type
        buses = [bus for bus in (self.app.events, self.events) if bus.has_listeners(kind)]
        for event in events:
            for bus in buses:
                if (pending := bus.dispatch(event)) is not None:
                    await pending

    def _log_outage(self, exc: BaseException) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            log.error(
                "worker %s: backend error (%s: %s); retrying with backoff",
                self.id,
                type(exc).__name__,
                exc,
            )

    @staticmethod
    async def _until(awaitable: Awaitable[Any], event: asyncio.Event) -> None:
        """Wait for ``awaitable`` or ``event``, whichever comes first."""
        if event.is_set():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            return
        main = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # An Event.wait() has nothing to clean up, so the stopper is not awaited: that
            # saves event-loop turns on every idle wake-up (pickup latency).
            stopper.cancel()
            if not main.done():
                main.cancel()
                await asyncio.gather(main, return_exceptions=True)
            elif not main.cancelled():
                main.exception()  # retrieved: a failed wait is the caller's to retry


def _encode_result(result: Any) -> bytes:
    try:
        return msgspec.json.encode(result)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadPayload(f"the handler's return value is not JSON-encodable: {exc}") from None


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
