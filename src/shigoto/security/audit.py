"""The audit trail: who enqueued, cancelled, redrove, purged, paused, scheduled or ran
which job, and when.

Entries are appended through the backend (contract section "audit"); nothing in the
API edits or deletes one, except pruning by age (``AuditSettings.retention_s``).

Who is "who": the **actor** of the current context —

* ``with app.actor("alice"): ...`` in your code (a web request handler sets it to the
  signed-in user; it is a context variable, so concurrent requests do not mix),
* the CLI's ``--actor`` (default: the OS user),
* the dashboard's signed-in user,
* otherwise ``user@host`` of the process.

The enqueuing actor also travels with the job (``ctx.actor``), so the handler can check
permissions at run time instead of receiving credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ..backends.audit_groups import AuditGroup, GroupedEntries
from ..backends.contract import AUDIT_BATCH, AuditEntry, AuditFilter, Backend, Enqueued, NewJob
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..app import App
    from ..job import JobRecord

log = logging.getLogger(__name__)

ACTIONS = (
    "enqueue",
    "cancel",
    "remove",
    "promote",
    "redrive",
    "purge",
    "pause",
    "resume",
    "schedule.save",
    "schedule.delete",
    "keys.rotate",
    "job.start",
    "job.end",
)
"""Actions the core records (the dashboard adds ``dashboard.<action>``)."""

MAX_ACTOR = 200
_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("shigoto_actor", default=None)
_json = msgspec.json.Encoder()


@functools.cache
def default_actor() -> str:
    """``user@host`` of this process (computed once)."""
    from ..dead_letters import default_actor as process_actor

    return process_actor()


def current_actor() -> str:
    """The actor of the current context, or ``user@host`` of the process."""
    return _actor.get() or default_actor()


def explicit_actor() -> str | None:
    """The actor set with :func:`acting_as` in this context, if any."""
    return _actor.get()


def adopt_actor(actor: str | None) -> None:
    """Make ``actor`` current for the rest of this task (a worker calls it in each job's
    own task, so jobs and audit entries a handler creates carry the job's actor)."""
    if actor:
        _actor.set(actor)


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[str]:
    """Within the block, audit entries and enqueued jobs carry ``actor``."""
    if not isinstance(actor, str) or not actor or len(actor) > MAX_ACTOR:
        raise ConfigurationError(f"actor must be a non-empty string of at most {MAX_ACTOR} chars")
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """``App(audit=AuditSettings(...))``; ``App(audit=False)`` records nothing.

    Args:
        enqueues: record every enqueue (one entry per job, one append per bulk chunk).
        runs: record each job's start and end (buffered, written in batches).
        retention_s: entries older than this are pruned as new ones are written
            (default 90 days; None keeps everything).
    """

    enabled: bool = True
    enqueues: bool = True
    runs: bool = True
    retention_s: float | None = 90 * 24 * 3600.0


class Audit:
    """``app.audit``: write and read the trail."""

    PRUNE_EVERY = 10_000
    """Entries appended between two prunes by age. A prune call removes up to
    ``AUDIT_BATCH`` entries (rows; stream items on Redis), and up to ``PRUNE_ROUNDS``
    calls are made while they come back full, so pruning keeps pace with appending
    without a round trip every few hundred entries (a busy worker appends two per job)."""
    PRUNE_ROUNDS = 20

    def __init__(self, app: App, settings: AuditSettings) -> None:
        self.app = app
        self.settings = settings
        self._appended = 0

    def entry(
        self,
        action: str,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        actor: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            at_ms=self.app.clock.now_ms(),
            actor=actor or current_actor(),
            action=action,
            queue=queue,
            job_id=job_id,
            details=_json.encode(details) if details else None,
        )

    async def record(
        self,
        action: str,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        actor: str | None = None,
        details: Mapping[str, Any] | None = None,
        backend: Backend | None = None,
    ) -> None:
        """Append one entry (no-op when auditing is off)."""
        if not self.settings.enabled:
            return
        entry = self.entry(action, queue=queue, job_id=job_id, actor=actor, details=details)
        await self.append([entry], backend)

    async def append(self, entries: Sequence[AuditEntry], backend: Backend | None = None) -> None:
        if not self.settings.enabled or not entries:
            return
        backend = backend or await self.app.backend()
        for start in range(0, len(entries), AUDIT_BATCH):
            await backend.audit_append(entries[start : start + AUDIT_BATCH])
        self._appended += len(entries)
        if self.settings.retention_s is not None and self._appended >= self.PRUNE_EVERY:
            self._appended = 0
            before = self.app.clock.now_ms() - int(self.settings.retention_s * 1000)
            for _ in range(self.PRUNE_ROUNDS):
                if await backend.audit_prune(before_ms=before, limit=AUDIT_BATCH) < AUDIT_BATCH:
                    break

    async def query(
        self,
        *,
        job_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        queue: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries matching every given filter, newest first."""
        where = AuditFilter(job_id, actor, action, queue, since_ms, until_ms)
        out: list[AuditEntry] = []
        async for entry in self.iterate(where):
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    async def iterate(self, where: AuditFilter) -> AsyncIterator[AuditEntry]:
        backend = await self.app.backend()
        cursor: str | None = None
        while True:
            page = await backend.audit_query(where, cursor=cursor, limit=500)
            for item in page.items:
                yield item
            if page.cursor is None:
                return
            cursor = page.cursor

    def query_sync(self, **filters: Any) -> list[AuditEntry]:
        return self.app.portal.call(self.query, **filters)


def enqueue_entries(
    jobs: Sequence[NewJob], done: Sequence[Enqueued], now_ms: int
) -> GroupedEntries:
    """One ``enqueue`` entry per job actually created, held as groups of entries that
    differ only in the job id (a bulk add's chunk is usually one group: same queue,
    name and actor), since this runs for every job of a bulk add."""
    groups: list[AuditGroup] = []
    ids: list[str] = []
    actor: str | bool | None = False  # no job seen yet (an actor is a str or None)
    queue = name = ""
    for new, result in zip(jobs, done, strict=True):
        if not result.created:
            continue
        if new.options.actor == actor and new.name == name and new.queue == queue:
            ids.append(new.id)
            continue
        actor, queue, name = new.options.actor, new.queue, new.name
        ids = [new.id]
        details = _json.encode({"name": name})
        groups.append(AuditGroup(now_ms, actor or "unknown", "enqueue", queue, details, ids))
    return GroupedEntries(groups)


def details_of(entry: AuditEntry) -> dict[str, Any]:
    if entry.details is None:
        return {}
    decoded = msgspec.json.decode(entry.details)
    return decoded if isinstance(decoded, dict) else {"value": decoded}


class RunRecorder:
    """A worker's ``job.start`` / ``job.end`` entries, buffered and written in batches
    (one append, one stream item on Redis, for up to ``AUDIT_BATCH`` entries) so a busy
    worker pays one write per batch, not two per job: as soon as a batch is full, else
    by a timer every ``FLUSH_S``, and at shutdown. Outcomes do not wait for them, so a
    killed worker loses the entries of its last ``FLUSH_S`` at most (docs/security.md,
    "Crash window").

    Why a full batch goes at once rather than with the timer: a worker doing 45,000
    jobs/s buffered 18,000 entries per ``FLUSH_S`` and then wrote them as 18 appends in
    a row, a burst that Redis (one thread) served while the worker's claims waited
    behind it (bench/README.md, "Bare connections, and the first add after a
    restart")."""

    FLUSH_S = 0.2

    def __init__(self, audit: Audit, worker_id: str) -> None:
        self.audit = audit
        self.worker_id = worker_id
        self.enabled = audit.settings.enabled and audit.settings.runs
        self._pending: list[AuditGroup] = []
        """Entries not written yet, as groups alike but for the job id: the entries of
        one claimed batch (or of one batch of completions) usually differ only in that,
        and grouped they cost less to build, encode and store (see
        :mod:`shigoto.backends.audit_groups`). A group is never extended after the call
        that made it, so one being written does not change meanwhile."""
        self._count = 0
        """How many entries ``_pending`` holds."""
        self._full = asyncio.Event()
        """Set when ``_pending`` holds a whole batch: the flush task writes it now."""
        self._task: asyncio.Task[None] | None = None
        self._backend: Backend | None = None
        self._owned = False
        """Whether ``_backend`` was opened here (and is closed here)."""
        self._flushing = asyncio.Lock()
        self._written = 0
        """Entries written so far (with ``_count``: a position in the sequence of all
        entries, which tells a flush where to stop)."""
        self._actor = f"worker:{worker_id}"
        self._details: dict[str | None, tuple[bytes, tuple[bytes, ...], bytes]] = {}
        """Per enqueuing actor, the run entries' details encoded once instead of twice
        per job: the text that ends each of them (``,"worker_id":...,"for":...}``), the
        whole ``job.start`` details of attempts 0 to ``ATTEMPTS_CACHED - 1``, and the
        whole ``job.end`` details of a completed job."""

    ATTEMPTS_CACHED = 8

    def _details_for(self, on_behalf_of: str | None) -> tuple[bytes, tuple[bytes, ...], bytes]:
        if len(self._details) > 1000:
            self._details.clear()
        tail = b',"worker_id":' + _json.encode(self.worker_id)
        if on_behalf_of:
            tail += b',"for":' + _json.encode(on_behalf_of)
        tail += b"}"
        starts = tuple(b'{"attempt":%d' % n + tail for n in range(self.ATTEMPTS_CACHED))
        parts = self._details[on_behalf_of] = (tail, starts, b'{"outcome":"completed"' + tail)
        return parts

    @property
    def pending(self) -> GroupedEntries:
        """The entries not written yet, oldest first."""
        return GroupedEntries(self._pending)

    def started(self, records: Iterable[JobRecord], at_ms: int) -> None:
        """``job.start`` of each job of a claimed batch (the same entries as :meth:`note`
        would make, built from pre-encoded parts): the worker calls it once per claim,
        not once per job, since per-job calls in each job's task cost a no-op job
        several times what they cost in isolation."""
        if self.enabled:
            self._record(records, at_ms, "job.start")

    def completed(self, records: Iterable[JobRecord], at_ms: int) -> None:
        """``job.end`` with outcome ``completed`` of each job of a batch of completions
        written (the common end), once they are written."""
        if self.enabled:
            self._record(records, at_ms, "job.end")

    def _record(self, records: Iterable[JobRecord], at_ms: int, action: str) -> None:
        """The entries of ``records`` for ``action``. A job like the one before it (same
        enqueuer, queue and, for a start, attempt: the usual case in a batch) costs one
        comparison of each and an append of its id; only a change of any of them looks
        its details text up and may open a group."""
        start = action == "job.start"
        actor: str | bool | None = False  # no job seen yet (an actor is a str or None)
        queue = ""
        attempt = -1
        ids: list[str] = []
        count = 0
        for record in records:
            count += 1
            on_behalf_of = record.options.actor
            if (
                on_behalf_of == actor
                and record.queue == queue
                and (not start or record.attempts == attempt)
            ):
                ids.append(record.id)
                continue
            actor, queue, attempt = on_behalf_of, record.queue, record.attempts
            tail, starts, text = self._details.get(on_behalf_of) or self._details_for(on_behalf_of)
            if start:
                text = (
                    starts[attempt]
                    if 0 <= attempt < self.ATTEMPTS_CACHED
                    else b'{"attempt":%d' % attempt + tail
                )
            ids = [record.id]
            self._pending.append(AuditGroup(at_ms, self._actor, action, queue, text, ids))
        self._count += count
        if self._count >= AUDIT_BATCH:
            self._full.set()

    def start(self, backend: Backend) -> None:
        """Start the flush task. On a server (``multi_host``: Redis), entries are written
        through a connection of their own, so audit writes never queue in front of the
        worker's claims and acknowledgements. On a local file (SQLite) they share the
        worker's ``backend``: a second connection would only wait for the same write
        lock, while sharing lets them join the worker's group commits."""
        if self.enabled:
            if backend.capabilities.multi_host:
                from ..backends import open_backend

                self._backend, self._owned = open_backend(self.audit.app.url), True
            else:
                self._backend, self._owned = backend, False
            self._task = asyncio.create_task(self._loop(), name="shigoto-audit")

    def note(
        self, action: str, queue: str, job_id: str, on_behalf_of: str | None, **details: Any
    ) -> None:
        """Buffer one entry; the actor is the worker, the job's enqueuer is ``for``."""
        if self.enabled:
            details["worker_id"] = self.worker_id
            if on_behalf_of:
                details["for"] = on_behalf_of
            encoded = _json.encode(details)
            at_ms = self.audit.app.clock.now_ms()
            self._pending.append(AuditGroup(at_ms, self._actor, action, queue, encoded, [job_id]))
            self._count += 1

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.FLUSH_S):
                    await self._full.wait()
            self._full.clear()
            if not await self.flush():
                await asyncio.sleep(self.FLUSH_S)  # the backend is down: not once per job

    async def flush(self) -> bool:
        """Write the entries buffered before this call, oldest first; False when the
        backend refused them (they stay buffered for the next try).

        The flush task calls it for each full batch and every ``FLUSH_S``, and
        :meth:`close` once more at shutdown. Entries recorded while it writes are left
        to the next flush: chasing them would keep the caller waiting, and write a
        small batch per round trip. One flush at a time: two would write the same
        entries twice, or out of order.
        """
        if not self._pending or self._backend is None:
            return True
        upto = self._written + self._count
        async with self._flushing:
            while self._written < upto:
                batch = self.pending[: min(AUDIT_BATCH, upto - self._written)]
                try:
                    await self.audit.append(batch, self._backend)
                except Exception:
                    log.warning("audit: could not write %d run entries; retrying", len(batch))
                    return False
                self._pending = self.pending[len(batch) :].groups  # more may have come
                self._count -= len(batch)
                self._written += len(batch)
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("audit: run entries lost at shutdown")
        if self._backend is not None and self._owned:
            await self._backend.close()


async def record(
    app: App,
    *,
    actor: str,
    action: str,
    queue: str | None = None,
    target: str | None = None,
    job_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Append one entry for ``app`` (the hook the dashboard calls for its actions)."""
    more = dict(details or {})
    if target is not None:
        more["target"] = target
    await app.audit.record(action, queue=queue, job_id=job_id, actor=actor, details=more or None)
