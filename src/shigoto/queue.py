"""Queue: produce jobs, inspect them, administer the queue.

The public methods validate input and do the bookkeeping (ids, option layering,
encoding) once; the backend is only asked to persist.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .backends.contract import (
    Backend,
    BatchRecord,
    Enqueued,
    NewJob,
    QueueLimits,
)
from .bulk_add import BulkAdd
from .clock import Seconds, to_ms
from .coalesce import AddCoalescer
from .dead_letters import DeadLetterOps
from .errors import ConfigurationError
from .idempotency import dedup_fields, require_idempotency
from .job import (
    Job,
    JobOptions,
    JobRecord,
    JobState,
    new_job_id,
    option_overrides,
    validate_delay,
    validate_job_id,
)
from .limits import GroupKey, RateSpec, build_limits, describe, group_of, validate_group
from .security.audit import current_actor, enqueue_entries
from .telemetry import trace_fields, traced_enqueue

if TYPE_CHECKING:
    from .app import App
    from .batches import Batch, DeadChunkPolicy, FollowUpArg
    from .handler import JobHandler

OPTIONS_CACHE = 256
"""Most merged option sets a queue keeps (see ``Queue._job_options``)."""
_encoder = msgspec.json.Encoder()


class Queue(DeadLetterOps):
    """A named queue. Get one with ``app.queue(name)``; defaults apply to every job
    added through it (handler defaults and per-call options override them)."""

    def __init__(self, app: App, name: str, defaults: dict[str, Any]) -> None:
        if not isinstance(name, str) or not name or len(name) > 128 or "{" in name or "}" in name:
            raise ConfigurationError(
                f"queue name must be 1-128 characters without braces, got {name!r}"
            )
        self.app = app
        self.name = name
        self.rate_limit_key: GroupKey | None = defaults.pop("rate_limit_key", None)
        """Default group of this queue's jobs (``data -> group``), see shigoto.limits."""
        if self.rate_limit_key is not None and not callable(self.rate_limit_key):
            raise ConfigurationError("rate_limit_key must be callable(data) -> str | None")
        self.defaults = option_overrides(**defaults)
        self._options_cache: dict[tuple[Any, ...], JobOptions] = {}
        self._coalescers: weakref.WeakKeyDictionary[Backend, AddCoalescer] = (
            weakref.WeakKeyDictionary()
        )
        self._cached_defaults: dict[str, Any] = dict(self.defaults)

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    # -- producing ---------------------------------------------------------------------

    @traced_enqueue
    async def add(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
        delay: Seconds | None = None,
        dedup_key: str | None = None,
        dedup_ttl: Seconds | None = None,
        encrypt: Sequence[str] | None = None,
        allow_sensitive: Sequence[str] | None = None,
        group: str | None = None,
        **options: Any,
    ) -> Job:
        """Add one job. Adding an existing ``job_id`` returns that job (``created=False``).

        ``group``: the job's rate-limit group (default: the handler's or the queue's
        ``rate_limit_key`` applied to ``data``), see :mod:`shigoto.limits`.

        Options: ``priority`` (higher first), ``attempts``, ``backoff``, ``timeout``,
        ``remove_on_complete``, ``remove_on_fail``, ``max_stalls``.

        ``dedup_key``: while a job added with this key is waiting, delayed or active
        (or for ``dedup_ttl`` seconds after it was added), adding another returns that
        job (``created=False``) instead; see :mod:`shigoto.idempotency`.

        ``encrypt``: field paths stored encrypted (added to the job's own);
        ``allow_sensitive``: field paths the payload guard lets through
        (see :mod:`shigoto.security`).
        """
        now = self.app.clock.now_ms()
        new = self._new_job(
            name,
            data,
            job_id,
            delay,
            options,
            now,
            dedup_key=dedup_key,
            dedup_ttl=dedup_ttl,
            encrypt=encrypt,
            allow_sensitive=allow_sensitive,
            group=group,
        )
        backend = await self.app.backend()
        if new.dedup_key is not None:
            require_idempotency(backend)
        done = await self._coalescer(backend).add(new)
        return Job(self, done.id, created=done.created)

    def _coalescer(self, backend: Backend) -> AddCoalescer:
        """Concurrent adds are written together (see :mod:`shigoto.coalesce`)."""
        coalescer = self._coalescers.get(backend)
        if coalescer is None:

            async def store(jobs: list[NewJob]) -> list[Enqueued]:
                return await self._store_audited(jobs, self.app.clock.now_ms(), backend)

            coalescer = self._coalescers[backend] = AddCoalescer(store)
        return coalescer

    async def _audit_enqueued(
        self, jobs: Sequence[NewJob], done: Sequence[Enqueued], backend: Backend
    ) -> None:
        audit = self.app.audit
        if not (audit.settings.enabled and audit.settings.enqueues):
            return
        await audit.append(enqueue_entries(jobs, done, self.app.clock.now_ms()), backend)

    @traced_enqueue
    async def add_bulk(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        on_progress: Callable[[int], Any] | None = None,
        return_jobs: bool = True,
    ) -> list[Job]:
        """Add many jobs in few backend round trips (chunks of 1,000).

        Each item is ``{"name": ..., "data": {...}, **options}`` with the options of
        :meth:`add`. Items are validated chunk by chunk, so an iterator of millions is
        consumed in bounded memory; an invalid item stops the call with its index.
        ``on_progress(stored_so_far)`` is called after each chunk is stored;
        ``return_jobs=False`` returns ``[]`` instead of one handle per job (memory
        stays bounded however many jobs the iterator yields).
        """
        backend = await self.app.backend()
        return await BulkAdd(self, backend, on_progress, return_jobs).run(jobs)

    async def _store_audited(
        self, batch: list[NewJob], now: int, backend: Backend
    ) -> list[Enqueued]:
        done = await backend.enqueue(batch, now)
        await self._audit_enqueued(batch, done, backend)
        return done

    def _new_job(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        job_id: str | None,
        delay: Seconds | None,
        options: dict[str, Any],
        now_ms: int,
        *,
        dedup_key: str | None = None,
        dedup_ttl: Seconds | None = None,
        encrypt: Sequence[str] | None = None,
        allow_sensitive: Sequence[str] | None = None,
        group: str | None = None,
    ) -> NewJob:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"job name must be a non-empty string, got {name!r}")
        handler = self.app.handlers.get(name)
        group = validate_group(group)
        group_key = handler.rate_limit_key if handler is not None else None
        group_key = group_key or self.rate_limit_key
        if group is None and group_key is not None and isinstance(data, Mapping):
            group = group_of(group_key, data, name)
        merged = self._job_options(name, handler, options)
        payload = self.app.encode_payload(
            name, data, encrypt=encrypt, allow_sensitive=allow_sensitive
        )
        delay_ms = 0 if delay is None else to_ms(validate_delay(delay))
        key, ttl_ms = dedup_fields(dedup_key, dedup_ttl)
        return NewJob(
            id=validate_job_id(job_id) or new_job_id(),
            queue=self.name,
            name=name,
            payload=payload,
            options=merged,
            created_ms=now_ms,
            ready_ms=now_ms + delay_ms,
            dedup_key=key,
            dedup_ttl_ms=ttl_ms,
            group=group,
        )

    def _job_options(
        self, name: str, handler: JobHandler[Any] | None, options: dict[str, Any]
    ) -> JobOptions:
        """App defaults < queue defaults < handler options < this call's options, plus
        the actor and trace context.

        Without per-call options (every job of a typical ``add_bulk``) the result
        depends only on the job name, its handler, the actor and the trace context, so
        it is built once and reused: merging and validating cost more than the rest of
        preparing a job. The cache is dropped when the queue's defaults change."""
        actor = current_actor()
        trace = trace_fields()
        key = None
        if not options:
            if self.defaults != self._cached_defaults:
                self._options_cache.clear()
                self._cached_defaults = dict(self.defaults)
            key = (name, handler, actor, *trace.items())
            cached = self._options_cache.get(key)
            if cached is not None:
                return cached
        layered = {**self.defaults, **(handler.options if handler else {})}
        layered.update(option_overrides(**options))
        layered["actor"] = actor
        layered.update(trace)
        merged = msgspec.structs.replace(self.app.default_options, **layered)
        if key is not None:
            if len(self._options_cache) >= OPTIONS_CACHE:
                self._options_cache.clear()
            self._options_cache[key] = merged
        return merged

    async def add_chunks(
        self,
        name: str,
        items: Iterable[Any],
        *,
        chunk_size: int = 100,
        on_complete: FollowUpArg = None,
        on_failure: FollowUpArg = None,
        dead_chunks: DeadChunkPolicy = "run",
        total_items: int | None = None,
        on_progress: Callable[[int, int], Any] | None = None,
        **options: Any,
    ) -> Batch:
        """Split ``items`` into chunk jobs of ``chunk_size`` tracked as one batch.

        Each chunk job ``name`` gets the data ``items``, ``chunk_index``,
        ``total_chunks`` (None when ``items`` has no length and ``total_items`` is not
        given) and ``batch_id``; ``ctx.batch`` describes its batch. When every chunk
        is final, one follow-up job runs exactly once: ``on_complete=(name, data)``,
        or ``on_failure`` when a chunk ended dead or cancelled; without ``on_failure``,
        ``dead_chunks="run"`` runs ``on_complete`` anyway and ``"skip"`` runs nothing.
        ``items`` is streamed (an iterator of millions is fine);
        ``on_progress(items_enqueued, chunks_enqueued)`` follows the enqueueing.
        Options (``priority``, ``attempts``...) apply to every chunk. See
        :mod:`shigoto.batches`.
        """
        from .batches import add_chunks

        return await add_chunks(
            self,
            name,
            items,
            chunk_size=chunk_size,
            on_complete=on_complete,
            on_failure=on_failure,
            dead_chunks=dead_chunks,
            total_items=total_items,
            on_progress=on_progress,
            **options,
        )

    async def get_batch(self, batch_id: str) -> Batch | None:
        """The batch with this id (its record loaded), or None."""
        from .batches import get_batch

        return await get_batch(self, batch_id)

    async def batches(self, *, unfinished: bool = False, limit: int = 100) -> list[Batch]:
        """This queue's batches, newest first."""
        from .batches import list_batches

        return await list_batches(self, unfinished=unfinished, limit=limit)

    async def cancel_batch(self, batch_id: str) -> BatchRecord:
        """Cancel a batch: pending chunks cancelled, running ones see ``ctx.cancelled``."""
        from .batches import cancel_batch

        return await cancel_batch(self, batch_id)

    # -- inspecting --------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id (its ``record`` loaded), or None."""
        record = await self._get_record(job_id)
        return None if record is None else Job(self, job_id, created=False, record=record)

    async def _get_record(self, job_id: str) -> JobRecord | None:
        return await (await self.app.backend()).get(self.name, job_id)

    async def counts(self) -> dict[str, int]:
        """Jobs per state, every state present: ``{"waiting": 3, "active": 1, ...}``."""
        counts = await (await self.app.backend()).counts(self.name)
        return {state.value: n for state, n in counts.items()}

    async def jobs(
        self, state: JobState | str, *, offset: int = 0, limit: int = 100
    ) -> list[JobRecord]:
        """Jobs in one state, paginated: waiting/delayed in run order, others newest first."""
        try:
            kind = JobState(state)
        except ValueError:
            raise ConfigurationError(
                f"unknown job state {state!r}; known: {', '.join(s.value for s in JobState)}"
            ) from None
        if offset < 0 or not 1 <= limit <= 10_000:
            raise ConfigurationError("offset must be >= 0 and limit between 1 and 10000")
        return await (await self.app.backend()).list_jobs(
            self.name, kind, offset=offset, limit=limit
        )

    # -- administering -------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobState | None:
        """Cancel a waiting or delayed job; flag an active one. Returns its state after."""
        backend = await self.app.backend()
        state = await backend.cancel(self.name, job_id, now_ms=self.app.clock.now_ms())
        if state is not None:
            await self.app.audit.record(
                "cancel", queue=self.name, job_id=job_id, details={"state": state.value}
            )
        return state

    async def remove(self, job_id: str) -> bool:
        """Delete a job in any state but ``active`` (cancel a running job first).
        Returns False when the job is active or unknown."""
        job_id = _required_job_id(job_id, "remove")
        backend = await self.app.backend()
        record = await backend.get(self.name, job_id)
        removed = await backend.remove(self.name, job_id, now_ms=self.app.clock.now_ms())
        if removed:
            details = {} if record is None else {"state": record.state.value}
            await self.app.audit.record("remove", queue=self.name, job_id=job_id, details=details)
        return removed

    async def promote(self, job_id: str) -> bool:
        """Run a delayed job now: it becomes ``waiting`` as if it had become ready at this
        moment. Returns False when the job is not delayed (or unknown)."""
        job_id = _required_job_id(job_id, "promote")
        backend = await self.app.backend()
        promoted = await backend.promote(self.name, job_id, now_ms=self.app.clock.now_ms())
        if promoted:
            await self.app.audit.record("promote", queue=self.name, job_id=job_id)
        return promoted

    async def pause(self) -> None:
        """Workers stop taking jobs from this queue (running ones finish)."""
        await (await self.app.backend()).set_paused(self.name, True)
        await self.app.audit.record("pause", queue=self.name)

    async def resume(self) -> None:
        await (await self.app.backend()).set_paused(self.name, False)
        await self.app.audit.record("resume", queue=self.name)

    async def is_paused(self) -> bool:
        return await (await self.app.backend()).is_paused(self.name)

    async def set_limits(
        self,
        *,
        rate_limit: RateSpec | None = None,
        max_active: int | None = None,
        group_rate_limit: RateSpec | None = None,
    ) -> None:
        """Replace this queue's limits, for every worker at once (stored in the backend):
        ``await app.queue("email").set_limits(rate_limit="100/s", max_active=5)``.

        ``rate_limit``: claims per sliding window (``"100/s"``, ``"600/m"``, ``"10/h"``,
        ``"5/10s"``); ``max_active``: jobs running at once across all workers;
        ``group_rate_limit``: the same window per rate-limit group, with fair rotation
        between groups. Arguments left out are removed; ``set_limits()`` clears all.
        See :mod:`shigoto.limits`."""
        limits = build_limits(
            rate_limit=rate_limit, max_active=max_active, group_rate_limit=group_rate_limit
        )
        backend = await self.app.backend()
        if not backend.capabilities.rate_limits:
            raise ConfigurationError(
                f"the {backend.capabilities.name} backend does not support rate limits yet "
                "(contract section 'rate limits')"
            )
        await backend.set_limits(self.name, limits)
        await self.app.audit.record("limits", queue=self.name, details=describe(limits))

    async def limits(self) -> dict[str, Any]:
        """This queue's limits as set (``{"rate_limit": "100/s", "max_active": 5,
        "group_rate_limit": None, "held_until_ms": None}``)."""
        backend = await self.app.backend()
        if not backend.capabilities.rate_limits:
            stored = QueueLimits()  # a backend without the section has no limits
        else:
            stored = await backend.get_limits(self.name, now_ms=self.app.clock.now_ms())
        return {**describe(stored), "held_until_ms": stored.held_until_ms}

    # -- blocking twins (one portal; see shigoto.portal) -------------------------------

    def add_sync(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
        delay: Seconds | None = None,
        **options: Any,
    ) -> Job:
        return self.app.portal.call(self.add, name, data, job_id=job_id, delay=delay, **options)

    def add_bulk_sync(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        return self.app.portal.call(self.add_bulk, jobs)

    def add_chunks_sync(self, name: str, items: Iterable[Any], **kwargs: Any) -> Batch:
        return self.app.portal.call(self.add_chunks, name, items, **kwargs)

    def get_batch_sync(self, batch_id: str) -> Batch | None:
        return self.app.portal.call(self.get_batch, batch_id)

    def get_job_sync(self, job_id: str) -> Job | None:
        return self.app.portal.call(self.get_job, job_id)

    def counts_sync(self) -> dict[str, int]:
        return self.app.portal.call(self.counts)

    def cancel_sync(self, job_id: str) -> JobState | None:
        return self.app.portal.call(self.cancel, job_id)

    def remove_sync(self, job_id: str) -> bool:
        return self.app.portal.call(self.remove, job_id)

    def promote_sync(self, job_id: str) -> bool:
        return self.app.portal.call(self.promote, job_id)

    def pause_sync(self) -> None:
        self.app.portal.call(self.pause)

    def set_limits_sync(self, **limits: Any) -> None:
        self.app.portal.call(self.set_limits, **limits)

    def resume_sync(self) -> None:
        self.app.portal.call(self.resume)


def _required_job_id(job_id: str, action: str) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise ConfigurationError(f"{action}: job_id must be a non-empty string, got {job_id!r}")
    return validate_job_id(job_id) or job_id
