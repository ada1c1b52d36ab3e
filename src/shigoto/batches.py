"""Chunked batches: split a big input into chunk jobs, track them as one batch, and run
one follow-up job when every chunk has finished.

``queue.add_chunks("import_rows", rows, chunk_size=100, on_complete=("notify", {...}))``
stores one job per chunk, with the data ``items``, ``chunk_index``, ``total_chunks`` and
``batch_id``, and returns a :class:`Batch` handle.

How "exactly once" holds:

* Chunk jobs have deterministic ids ``{batch_id}:{index}``; the follow-up has the id
  ``{batch_id}:follow-up``.
* A worker that finishes a chunk (completed, dead, cancelled) reports it
  (``record_batch_chunks``); the backend counts each chunk once.
* When the counters say every chunk is final, the core picks the follow-up (policy
  lives here, see :func:`follow_up_for`) and asks the backend to ``finish_batch``:
  setting the finished flag and storing the follow-up job is one atomic step, so two
  workers finishing the last two chunks at the same instant race on that flag and
  exactly one wins.
* A worker may die after its chunk completed but before it reported it. Every worker
  sweeps the unfinished batches of its queues (``reconcile_batch``: pending chunks whose
  job is already final are counted) and finishes those that are complete.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .backends.contract import Backend, BatchRecord, NewJob
from .clock import Seconds, seconds_of
from .errors import ConfigurationError, ShigotoError, WaitTimeout
from .job import FINAL_STATES, Job, JobOptions, JobState

if TYPE_CHECKING:
    from .queue import Queue

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 100
MAX_CHUNK_SIZE = 100_000
JOBS_PER_STORE = 100
"""Chunk jobs per backend round trip; with chunks of 100 items, 10,000 items per call."""
PROGRESS_SAMPLE = 200
"""Unfinished chunks whose own progress is read for :meth:`Batch.progress`."""
SWEEP_BATCHES = 50
FOLLOW_UP_SUFFIX = ":follow-up"
_CHUNK_ID = re.compile(r"^(batch-[0-9a-f]{24}):(\d+)$")
_FOLLOW_UP_ID = re.compile(r"^(batch-[0-9a-f]{24}):follow-up$")
_POLL_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25)

DeadChunkPolicy = Literal["run", "skip"]
FollowUpArg = tuple[str, Mapping[str, Any] | None] | str | None
ProgressCallback = Callable[[int, int], Any]
"""Called as ``on_progress(items_enqueued, chunks_enqueued)`` after each store."""


class BatchError(ShigotoError):
    """A batch could not be found, or was given an invalid argument."""


class FollowUp(msgspec.Struct, frozen=True):
    """A follow-up job, encoded at ``add_chunks`` time (guard and encryption applied)."""

    name: str
    payload: bytes
    options: JobOptions


class BatchDefinition(msgspec.Struct, frozen=True):
    """What the core stores with a batch (``BatchRecord.definition``)."""

    on_complete: FollowUp | None = None
    on_failure: FollowUp | None = None
    dead_chunks: str = "run"
    chunk_size: int = DEFAULT_CHUNK_SIZE


_def_decoder = msgspec.json.Decoder(BatchDefinition)
_encoder = msgspec.json.Encoder()


def new_batch_id() -> str:
    return "batch-" + os.urandom(12).hex()


def chunk_of(job_id: str) -> tuple[str, int] | None:
    """``(batch_id, chunk_index)`` for a chunk job's id, else None."""
    if not job_id.startswith("batch-"):
        return None
    match = _CHUNK_ID.match(job_id)
    return None if match is None else (match.group(1), int(match.group(2)))


def batch_of(job_id: str) -> str | None:
    """The batch a chunk or follow-up job belongs to, from its id."""
    if not job_id.startswith("batch-"):
        return None
    chunk = chunk_of(job_id)
    if chunk is not None:
        return chunk[0]
    match = _FOLLOW_UP_ID.match(job_id)
    return None if match is None else match.group(1)


def follow_up_for(definition: BatchDefinition, batch: BatchRecord) -> tuple[str, FollowUp | None]:
    """The outcome of a batch whose chunks are all final, and the follow-up to run.

    * cancelled batch → ``cancelled``, no follow-up;
    * every chunk completed → ``completed``, ``on_complete``;
    * some chunk dead or cancelled → ``on_failure`` if given (outcome ``failed``);
      else with ``dead_chunks="run"`` (default) ``on_complete`` runs anyway (outcome
      ``completed_with_failures``; the handler finds the failures in
      ``await ctx.batch.info()``), with ``"skip"`` nothing runs (outcome ``failed``).
    """
    if batch.cancel_requested:
        return "cancelled", None
    if batch.dead + batch.cancelled == 0:
        return "completed", definition.on_complete
    if definition.on_failure is not None:
        return "failed", definition.on_failure
    if definition.dead_chunks == "run" and definition.on_complete is not None:
        return "completed_with_failures", definition.on_complete
    return "failed", None


async def settle(backend: Backend, batch: BatchRecord | None, now_ms: int) -> bool:
    """Finish ``batch`` if all its chunks are final; True when this call finished it."""
    if batch is None or batch.finished_ms is not None or not batch.all_final:
        return False
    definition = _def_decoder.decode(batch.definition)
    outcome, spec = follow_up_for(definition, batch)
    job = None
    if spec is not None:
        job = NewJob(
            id=batch.id + FOLLOW_UP_SUFFIX,
            queue=batch.queue,
            name=spec.name,
            payload=spec.payload,
            options=spec.options,
            created_ms=now_ms,
            ready_ms=now_ms,
        )
    done = await backend.finish_batch(
        batch.queue, batch.id, outcome=outcome, follow_up=job, now_ms=now_ms
    )
    if done:
        log.info(
            "batch %s finished: %s%s",
            batch.id,
            outcome,
            f", follow-up {job.id} ({job.name}) enqueued" if job else "",
            extra={"batch_id": batch.id, "queue": batch.queue},
        )
    return done


# -- the handle ------------------------------------------------------------------------


class Batch:
    """A handle on one batch: returned by ``queue.add_chunks`` and ``queue.get_batch``.

    ``record`` is the last state read; :meth:`refresh` reads again. Counts are of
    chunks: ``done`` (completed), ``dead``, ``cancelled``, ``failed`` (dead + cancelled).
    """

    __slots__ = ("id", "queue", "record")

    def __init__(self, queue: Queue, batch_id: str, record: BatchRecord | None = None) -> None:
        self.queue = queue
        self.id = batch_id
        self.record = record

    def __repr__(self) -> str:
        r = self.record
        if r is None:
            return f"<Batch {self.queue.name}/{self.id}>"
        return f"<Batch {self.queue.name}/{self.id} {r.finals}/{r.total_chunks} {self.status}>"

    def _rec(self) -> BatchRecord:
        if self.record is None:
            raise BatchError(f"batch {self.id}: not loaded yet, await batch.refresh()")
        return self.record

    @property
    def total_chunks(self) -> int | None:
        return self._rec().total_chunks

    @property
    def total_items(self) -> int | None:
        return self._rec().total_items

    @property
    def done(self) -> int:
        return self._rec().completed

    @property
    def dead(self) -> int:
        return self._rec().dead

    @property
    def cancelled(self) -> int:
        return self._rec().cancelled

    @property
    def failed(self) -> int:
        return self._rec().dead + self._rec().cancelled

    @property
    def failed_chunks(self) -> list[int]:
        """Indices of chunks that ended dead or cancelled (the first 1000)."""
        return list(self._rec().failed_chunks)

    @property
    def finished(self) -> bool:
        return self._rec().finished_ms is not None

    @property
    def outcome(self) -> str | None:
        """``completed``, ``completed_with_failures``, ``failed`` or ``cancelled``."""
        return self._rec().outcome

    @property
    def status(self) -> str:
        """``adding`` (chunks still being enqueued), ``running``, or the outcome."""
        r = self._rec()
        if r.finished_ms is not None:
            return r.outcome or "finished"
        if r.total_chunks is None:
            return "adding"
        return "cancelling" if r.cancel_requested else "running"

    @property
    def follow_up_id(self) -> str | None:
        return self._rec().follow_up_id

    async def refresh(self) -> BatchRecord:
        record = await (await self.queue.app.backend()).get_batch(self.queue.name, self.id)
        if record is None:
            raise BatchError(f"batch {self.id} is not in queue {self.queue.name!r}")
        self.record = record
        return record

    async def progress(self) -> float:
        """Combined progress in percent (0-100): finished chunks count fully, running
        ones by their own ``update_progress`` (a number read as percent, or a dict with
        ``"percent"``), sampled over up to 200 unfinished chunks."""
        record = await self.refresh()
        total = record.total_chunks
        if total is None or total == 0:
            return 100.0 if total == 0 else 0.0
        partial = 0.0
        if record.finished_ms is None and record.finals < total:
            backend = await self.queue.app.backend()
            pending = await backend.pending_batch_chunks(
                self.queue.name, self.id, limit=PROGRESS_SAMPLE
            )
            records = await asyncio.gather(
                *(backend.get(self.queue.name, f"{self.id}:{i}") for i in pending)
            )
            for job in records:
                if job is not None and job.state not in FINAL_STATES:
                    partial += _fraction(job.progress_value)
        return min(100.0, 100.0 * (record.finals + partial) / total)

    async def follow_up(self) -> Job | None:
        """The follow-up job, once the batch finished with one."""
        record = await self.refresh()
        if record.follow_up_id is None:
            return None
        return await self.queue.get_job(record.follow_up_id)

    async def wait_until_finished(self, timeout: Seconds | None = None) -> Batch:
        """Wait until every chunk is final and the batch is finished (its follow-up
        enqueued, if any). Returns self; raises ``WaitTimeout`` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + seconds_of(timeout)
        for step in itertools.count():
            record = await self.refresh()
            if record.finished_ms is not None:
                return self
            pause = _POLL_S[min(step, len(_POLL_S) - 1)]
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise WaitTimeout(
                        f"batch {self.id}: {record.finals}/{record.total_chunks} chunks final "
                        f"after {timeout} s"
                    )
                pause = min(pause, left)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def cancel(self) -> BatchRecord:
        """Cancel the batch: waiting and delayed chunks end ``cancelled``, running ones
        see ``ctx.cancelled`` at their next heartbeat; no follow-up runs."""
        return await cancel_batch(self.queue, self.id)

    # -- blocking twins ------------------------------------------------------------------

    def refresh_sync(self) -> BatchRecord:
        return self.queue.app.portal.call(self.refresh)

    def progress_sync(self) -> float:
        return self.queue.app.portal.call(self.progress)

    def wait_until_finished_sync(self, timeout: Seconds | None = None) -> Batch:
        return self.queue.app.portal.call(self.wait_until_finished, timeout)

    def cancel_sync(self) -> BatchRecord:
        return self.queue.app.portal.call(self.cancel)


def _fraction(progress: Any) -> float:
    if isinstance(progress, dict):
        progress = progress.get("percent")
    if isinstance(progress, int | float) and not isinstance(progress, bool):
        return max(0.0, min(1.0, float(progress) / 100.0))
    return 0.0


# -- producing -------------------------------------------------------------------------


async def add_chunks(
    queue: Queue,
    name: str,
    items: Iterable[Any],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_complete: FollowUpArg = None,
    on_failure: FollowUpArg = None,
    dead_chunks: DeadChunkPolicy = "run",
    total_items: int | None = None,
    on_progress: ProgressCallback | None = None,
    **options: Any,
) -> Batch:
    """See :meth:`shigoto.queue.Queue.add_chunks`."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise ConfigurationError(f"chunk_size must be an int, got {chunk_size!r}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ConfigurationError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
    if dead_chunks not in ("run", "skip"):
        raise ConfigurationError(f"dead_chunks must be 'run' or 'skip', got {dead_chunks!r}")
    if isinstance(items, str | bytes | Mapping):
        raise ConfigurationError(
            "items must be an iterable of items (a list, a generator...), "
            f"not {type(items).__name__}"
        )
    if total_items is None and isinstance(items, Sized):
        total_items = len(items)
    total_chunks = None if total_items is None else -(-total_items // chunk_size)
    app = queue.app
    now = app.clock.now_ms()
    definition = BatchDefinition(
        on_complete=_follow_up(queue, on_complete, "on_complete", now),
        on_failure=_follow_up(queue, on_failure, "on_failure", now),
        dead_chunks=dead_chunks,
        chunk_size=chunk_size,
    )
    queue._new_job(name, {}, None, None, dict(options), now)  # validate name and options
    backend = await app.backend()
    batch_id = new_batch_id()
    await backend.create_batch(
        BatchRecord(
            id=batch_id,
            queue=queue.name,
            name=name,
            created_ms=now,
            definition=_encoder.encode(definition),
            updated_ms=now,
        )
    )
    iterator = iter(items)
    index = 0
    count = 0
    storing: asyncio.Future[None] | None = None
    try:
        while True:
            jobs: list[NewJob] = []
            now = app.clock.now_ms()
            for _ in range(JOBS_PER_STORE):
                chunk = list(itertools.islice(iterator, chunk_size))
                if not chunk:
                    break
                data = {
                    "items": chunk,
                    "chunk_index": index,
                    "total_chunks": total_chunks,
                    "batch_id": batch_id,
                }
                jobs.append(queue._new_job(name, data, f"{batch_id}:{index}", None, options, now))
                index += 1
                count += len(chunk)
            if not jobs:
                break
            if storing is not None:
                await storing
            storing = asyncio.ensure_future(
                _store(queue, backend, batch_id, jobs, now, (count, index), on_progress)
            )
            await asyncio.sleep(0)
    finally:
        if storing is not None:
            await storing
    if total_items is not None and total_items != count:
        log.warning(
            "batch %s: total_items=%d given but %d items were read; chunks carry total_chunks=%s",
            batch_id,
            total_items,
            count,
            total_chunks,
        )
    sealed = await backend.seal_batch(
        queue.name, batch_id, total_chunks=index, total_items=count, now_ms=app.clock.now_ms()
    )
    await settle(backend, sealed, app.clock.now_ms())  # no chunks, or all done already
    await app.audit.record(
        "batch.add", queue=queue.name, details={"batch_id": batch_id, "chunks": index}
    )
    return Batch(queue, batch_id, await backend.get_batch(queue.name, batch_id))


async def _store(
    queue: Queue,
    backend: Backend,
    batch_id: str,
    jobs: list[NewJob],
    now: int,
    done: tuple[int, int],
    on_progress: ProgressCallback | None,
) -> None:
    first = chunk_of(jobs[0].id)
    assert first is not None
    await backend.expect_batch_chunks(queue.name, batch_id, first[1], len(jobs))
    await queue._store_audited(jobs, now, backend)
    if on_progress is not None:
        result = on_progress(*done)
        if isinstance(result, Awaitable):
            await result


def _follow_up(queue: Queue, spec: FollowUpArg, param: str, now: int) -> FollowUp | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        name, data = spec, None
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        name, data = spec
    else:
        raise ConfigurationError(f"{param} must be a job name or (name, data), got {spec!r}")
    job = queue._new_job(name, data, None, None, {}, now)
    return FollowUp(name=job.name, payload=job.payload, options=job.options)


# -- administering ---------------------------------------------------------------------


async def get_batch(queue: Queue, batch_id: str) -> Batch | None:
    record = await (await queue.app.backend()).get_batch(queue.name, batch_id)
    return None if record is None else Batch(queue, batch_id, record)


async def list_batches(queue: Queue, *, unfinished: bool = False, limit: int = 100) -> list[Batch]:
    if not 1 <= limit <= 10_000:
        raise ConfigurationError("limit must be between 1 and 10000")
    records = await (await queue.app.backend()).list_batches(
        queue.name, unfinished=unfinished, limit=limit
    )
    return [Batch(queue, r.id, r) for r in records]


async def cancel_batch(queue: Queue, batch_id: str) -> BatchRecord:
    """Flag the batch, then cancel its unfinished chunks (see :meth:`Batch.cancel`)."""
    app = queue.app
    backend = await app.backend()
    record = await backend.cancel_batch(queue.name, batch_id, now_ms=app.clock.now_ms())
    if record is None:
        raise BatchError(f"batch {batch_id} is not in queue {queue.name!r}")
    await app.audit.record("batch.cancel", queue=queue.name, details={"batch_id": batch_id})
    while True:
        pending = await backend.pending_batch_chunks(queue.name, batch_id, limit=1000)
        cancelled: list[tuple[int, JobState]] = []
        states = await asyncio.gather(
            *(
                backend.cancel(queue.name, f"{batch_id}:{i}", now_ms=app.clock.now_ms())
                for i in pending
            )
        )
        for i, state in zip(pending, states, strict=True):
            if state is not None and state.is_final:
                cancelled.append((i, state))
        record = await backend.record_batch_chunks(
            queue.name, batch_id, cancelled, now_ms=app.clock.now_ms()
        )
        if not cancelled or len(pending) < 1000:
            break
    if record is None:
        raise BatchError(f"batch {batch_id} is not in queue {queue.name!r}")
    await settle(backend, record, app.clock.now_ms())
    return await backend.get_batch(queue.name, batch_id) or record


# -- the worker's side -----------------------------------------------------------------


class BatchTracker:
    """Reports finished chunks for a worker and sweeps its queues' unfinished batches.

    Errors are logged, never raised: a missed report is found by the next sweep.
    """

    def __init__(self, now_ms: Callable[[], int], quiet_ms: int) -> None:
        self._now_ms = now_ms
        self._quiet_ms = quiet_ms

    async def report(self, backend: Backend, finished: Sequence[tuple[str, str, JobState]]) -> None:
        """``finished``: (queue, job id, final state) of jobs that just ended."""
        groups: dict[tuple[str, str], list[tuple[int, JobState]]] = {}
        for queue, job_id, state in finished:
            chunk = chunk_of(job_id)
            if chunk is not None:
                groups.setdefault((queue, chunk[0]), []).append((chunk[1], state))
        for (queue, batch_id), chunks in groups.items():
            try:
                record = await backend.record_batch_chunks(
                    queue, batch_id, chunks, now_ms=self._now_ms()
                )
                await settle(backend, record, self._now_ms())
            except Exception:
                log.exception(
                    "batch %s: could not record finished chunks; the sweep will",
                    batch_id,
                    extra={"batch_id": batch_id, "queue": queue},
                )

    async def sweep(self, backend: Backend, queue: str) -> None:
        """Finish complete batches, and reconcile quiet ones (missed reports)."""
        try:
            batches = await backend.list_batches(queue, unfinished=True, limit=SWEEP_BATCHES)
            for batch in batches:
                now = self._now_ms()
                if batch.total_chunks is None:
                    continue  # still being added (or its producer died: see docs)
                record: BatchRecord | None = batch
                if not batch.all_final and now - batch.updated_ms >= self._quiet_ms:
                    record = await backend.reconcile_batch(queue, batch.id, now_ms=now)
                await settle(backend, record, self._now_ms())
        except Exception:
            log.exception("batch sweep of queue %s failed", queue, extra={"queue": queue})


# -- what a handler sees ----------------------------------------------------------------


class BatchContext:
    """``ctx.batch`` of a chunk job or a batch's follow-up job."""

    __slots__ = ("_queue", "chunk_index", "id")

    def __init__(self, queue: Queue, batch_id: str, chunk_index: int | None) -> None:
        self._queue = queue
        self.id = batch_id
        self.chunk_index = chunk_index
        """None for the follow-up job."""

    def __repr__(self) -> str:
        return f"<BatchContext {self.id} chunk={self.chunk_index}>"

    async def info(self) -> Batch:
        """The batch, freshly read: counts, ``failed_chunks``, status."""
        batch = Batch(self._queue, self.id)
        await batch.refresh()
        return batch

    def info_sync(self) -> Batch:
        """Blocking twin of :meth:`info` (for plain ``def`` handlers)."""
        return self._queue.app.portal.call(self.info)


def batch_context(queue: Queue, job_id: str) -> BatchContext | None:
    chunk = chunk_of(job_id)
    if chunk is not None:
        return BatchContext(queue, chunk[0], chunk[1])
    batch_id = batch_of(job_id)
    return None if batch_id is None else BatchContext(queue, batch_id, None)
