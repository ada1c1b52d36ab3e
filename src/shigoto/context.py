"""What a handler receives as ``ctx``: who it is, and how to talk back to the worker.

Async handlers get a :class:`JobContext`; plain ``def`` handlers (run in a thread) get a
:class:`SyncJobContext` with the same method names that block instead of returning
coroutines, so one mental model serves both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from .backends.contract import Lease
from .clock import Seconds, to_ms
from .errors import ConfigurationError, PayloadError
from .idempotency import ONCE_TTL
from .job import JobRecord
from .schedule import scheduled_at

if TYPE_CHECKING:
    from .batches import BatchContext
    from .worker import Worker

T = TypeVar("T")
MAX_PROGRESS_BYTES = 16 * 1024


class JobCancelledError(Exception):
    """Raised by ``ctx.raise_if_cancelled()`` once someone cancelled the running job."""


class JobContext:
    """Handed to async handlers as their first argument."""

    def __init__(self, worker: Worker, record: JobRecord, lease: Lease) -> None:
        self._worker = worker
        self.job = record
        self.lease = lease
        self.cancelled = False
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger named ``shigoto.job.<name>`` whose records carry ``job_id`` and
        ``queue``. Made on first use: ``getLogger`` takes the logging module's lock, a
        cost most jobs (which never log) should not pay."""
        if self._log is None:
            self._log = logging.LoggerAdapter(
                logging.getLogger(f"shigoto.job.{self.job.name}"),
                {"job_id": self.job.id, "queue": self.job.queue},
            )
        return self._log

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def queue(self) -> str:
        return self.job.queue

    @property
    def attempt(self) -> int:
        """1 on the first attempt, 2 on the first retry, ..."""
        return self.job.attempts

    @property
    def worker_id(self) -> str:
        return self._worker.id

    @property
    def actor(self) -> str | None:
        """Who enqueued this job (``with app.actor("alice")`` at enqueue time, else the
        producer's ``user@host``). Check permissions with it here, at run time, instead
        of passing credentials in the job data (see docs/security.md)."""
        return self.job.options.actor

    @property
    def scheduled_at(self) -> datetime | None:
        """For a job fired by a schedule: the tick it was fired for (timezone-aware,
        UTC), even when it runs late; ``.astimezone(ZoneInfo(...))`` for local time.
        None for jobs not fired by a schedule."""
        return scheduled_at(self.job.id)

    @property
    def batch(self) -> BatchContext | None:
        """For a chunk job of ``queue.add_chunks`` or its batch's follow-up job: the
        batch (``id``, ``chunk_index``, ``await ctx.batch.info()`` for counts and
        failed chunks). None for other jobs."""
        from .batches import batch_context

        return batch_context(self._worker.app.queue(self.queue), self.job_id)

    async def update_progress(self, progress: Any) -> None:
        """Record progress (a number such as 42, or a small JSON-able dict).

        Visible from ``job.progress()``, the CLI and the ``progress`` event.
        Raises ``LeaseLost`` if this worker no longer owns the job.
        """
        if isinstance(progress, bool) or not isinstance(progress, int | float | dict | str):
            raise ConfigurationError(
                "progress must be a number, a string or a small dict, "
                f"got {type(progress).__name__}"
            )
        try:
            encoded = msgspec.json.encode(progress)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"progress is not JSON-encodable: {exc}") from None
        if len(encoded) > MAX_PROGRESS_BYTES:
            raise PayloadError(
                f"progress is {len(encoded)} bytes; keep it under {MAX_PROGRESS_BYTES} bytes"
            )
        await self._worker._update_progress(self, encoded, progress)

    async def extend_lock(self, duration: Seconds | None = None) -> None:
        """Extend this job's lease now, by ``duration`` (default: the worker's lease).

        Heartbeats already do this from a separate thread; call it from handlers that
        know they will block for long. Raises ``LeaseLost`` if the lease was lost.
        """
        lease_ms = None if duration is None else to_ms(duration)
        if lease_ms is not None and lease_ms <= 0:
            raise ConfigurationError(f"extend_lock duration must be > 0, got {duration!r}")
        await self._worker._extend_lock(self, lease_ms)

    def raise_if_cancelled(self) -> None:
        """Stop cooperatively: raises ``JobCancelledError`` (the job ends ``cancelled``)
        once a cancellation has reached this worker."""
        if self.cancelled:
            raise JobCancelledError(f"job {self.job_id} was cancelled while running")

    async def once(
        self,
        key: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        ttl: Seconds | None = ONCE_TTL,
        **kwargs: Any,
    ) -> Any:
        """Run the side effect ``fn(*args, **kwargs)`` at most once per ``key`` (and queue).

        ``await ctx.once(f"welcome-mail:{user_id}", send_mail, user_id)`` sends, then
        records that it did (with the JSON-encodable result); a retry or a re-delivered
        job skips the call and gets the recorded result. If ``fn`` raises, nothing is
        recorded and the retry calls it again. Another job holding the same key makes
        this one wait for its outcome. The record is kept ``ttl`` (default 7 days;
        None: kept). ``fn`` may be async or return an awaitable. See
        ``docs/idempotency.md`` for the crash window that remains and how to close it.
        """
        from .idempotency import run_once

        return await run_once(self, key, fn, args, kwargs, ttl)


class SyncJobContext:
    """The blocking twin of :class:`JobContext`, for plain ``def`` handlers."""

    def __init__(self, ctx: JobContext, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop
        self.job = ctx.job
        self.job_id, self.name, self.queue = ctx.job_id, ctx.name, ctx.queue
        self.attempt, self.worker_id = ctx.attempt, ctx.worker_id
        self.scheduled_at = ctx.scheduled_at
        self.actor = ctx.actor
        self.batch = ctx.batch

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._ctx.log

    @property
    def cancelled(self) -> bool:
        return self._ctx.cancelled

    def _call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return asyncio.run_coroutine_threadsafe(fn(*args), self._loop).result()

    def update_progress(self, progress: Any) -> None:
        self._call(self._ctx.update_progress, progress)

    def extend_lock(self, duration: Seconds | None = None) -> None:
        self._call(self._ctx.extend_lock, duration)

    def raise_if_cancelled(self) -> None:
        self._ctx.raise_if_cancelled()

    def once(
        self,
        key: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        ttl: Seconds | None = ONCE_TTL,
        **kwargs: Any,
    ) -> Any:
        """Blocking twin of :meth:`JobContext.once`; ``fn`` runs in this thread."""
        from .idempotency import run_once_sync

        return run_once_sync(self._call, self._ctx, key, fn, args, kwargs, ttl)
