"""The dead-letter queue, operated: list, analyse, redrive, purge.

A job lands in ``dead`` when its retries are exhausted or its error is unrecoverable
(see :class:`~shigoto.job.DeadReason`); it keeps its payload, options and every
attempt's error. This module is the operator's side, mixed into
:class:`~shigoto.queue.Queue`:

* ``queue.dead_letters(...)`` — a page of dead jobs, newest first, filtered by job
  name, dead reason, error type, fingerprint and time of death.
* ``queue.dead_letter_groups(...)`` — **error analysis**: dead jobs grouped by the
  fingerprint of their last error (:mod:`shigoto.fingerprint`), each group with a count,
  first/last seen, job names, sample ids and a sample traceback. Grouping reads at most
  ``scan_limit`` dead jobs (newest first) and says whether it saw them all.
* ``queue.redrive(...)`` — back to the queue: by ids, by filter, or ``all=True``;
  ``dry_run=True`` only lists; ``rate="100/s"`` staggers the jobs' due times so that a
  redrive of 100k jobs does not stampede downstream (the call returns at once, the jobs
  wait as ``delayed``). Attempts restart from zero; the old errors stay as history, and
  a ``Redriven`` entry records who did it.
* ``queue.purge(...)`` — delete dead jobs, by ids, filter or age, with ``dry_run``.

Fingerprints are computed here when reading, not stored by backends: one
implementation for every backend, and grouping rules that can improve without a
migration. The price is that a fingerprint filter is applied after the backend's own
filters, page by page; the backend's filters (name, reason, error type, time) narrow
the scan first. Filters, cursors and rates live in :mod:`shigoto.dead_letter_query`.
"""

from __future__ import annotations

import getpass
import math
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .backends.contract import DeadLetter
from .clock import Seconds
from .dead_letter_query import (
    DeadLetterQuery,
    Names,
    When,
    build_query,
    fingerprint_of,
    join_cursor,
    parse_rate,
    split_cursor,
)
from .errors import ConfigurationError
from .fingerprint import Fingerprint
from .job import AttemptError, JobState
from .security.audit import current_actor

if TYPE_CHECKING:
    from .app import App
    from .backends.contract import Backend

PAGE = 500
"""Dead jobs read per backend call when scanning."""
MAX_BATCH = 500
"""Jobs moved or deleted per backend call."""
DEFAULT_SCAN_LIMIT = 10_000


class DeadLetterGroup(msgspec.Struct, frozen=True):
    """Dead jobs that died of the same cause (one fingerprint)."""

    fingerprint: str
    error_type: str
    message: str
    """The normalised message shared by the group (per-job values as placeholders)."""
    frame: str
    """The handler's top frame (``dir/file.py:function``) or ``job:<name>``."""
    count: int
    first_seen_ms: int
    last_seen_ms: int
    job_names: list[str]
    """Most frequent first."""
    reasons: dict[str, int]
    sample_ids: list[str]
    """Newest first."""
    sample_message: str
    """The newest job's message as it was."""
    sample_traceback: str


class DeadLetterReport(msgspec.Struct, frozen=True):
    """Result of :meth:`DeadLetterOps.dead_letter_groups`."""

    queue: str
    groups: list[DeadLetterGroup]
    """Largest first."""
    scanned: int
    """Dead jobs read to build the groups."""
    complete: bool
    """False when ``scan_limit`` stopped the scan: counts cover the newest jobs only."""
    total_dead: int
    """All dead jobs of the queue, matching the filters or not."""


class DeadLetterPage(msgspec.Struct, frozen=True):
    """A page of :meth:`DeadLetterOps.dead_letters`; pass ``cursor`` for the next one."""

    items: list[DeadLetter]
    cursor: str | None


def default_actor() -> str:
    """``user@host`` of this process: who a redrive is recorded as, unless told."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class DeadLetterOps:
    """The dead-letter methods of :class:`~shigoto.queue.Queue`."""

    app: App
    name: str

    # -- reading -----------------------------------------------------------------------

    async def dead_letters(
        self,
        *,
        name: Names = None,
        reason: Names = None,
        error_type: Names = None,
        fingerprint: Names = None,
        since: When = None,
        until: When = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> DeadLetterPage:
        """A page of dead jobs, newest death first. Filters combine with AND; each takes
        one value or several (OR). Pass the page's ``cursor`` to get the next one
        (``None``: no more). ``error_type`` matches the stored name or its last dotted
        part; ``fingerprint`` takes a prefix of a group's fingerprint."""
        if not 1 <= limit <= 1000:
            raise ConfigurationError(f"limit must be between 1 and 1000, got {limit}")
        query = build_query(
            self.app.clock.now_ms(),
            name=name,
            reason=reason,
            error_type=error_type,
            fingerprint=fingerprint,
            since=since,
            until=until,
        )
        backend = await self._dlq_backend()
        if not query.fingerprints:
            page = await backend.list_dead(self.name, query.where, cursor=cursor, limit=limit)
            return DeadLetterPage(page.items, page.cursor)
        # A fingerprint filter is applied here, so a page of ours ends in the middle of a
        # backend page: our cursor is (that backend page's cursor, last id returned).
        page_cursor, after_id = split_cursor(cursor)
        items: list[DeadLetter] = []
        scanned = 0
        while scanned < DEFAULT_SCAN_LIMIT:
            page = await backend.list_dead(self.name, query.where, cursor=page_cursor, limit=PAGE)
            letters = page.items
            if after_id is not None:
                ids = [letter.id for letter in letters]
                letters = letters[ids.index(after_id) + 1 :] if after_id in ids else letters
                after_id = None
            scanned += len(page.items)
            for position, letter in enumerate(letters):
                if query.matches(letter):
                    items.append(letter)
                    if len(items) == limit:
                        more = position + 1 < len(letters) or page.cursor is not None
                        return DeadLetterPage(
                            items, join_cursor(page_cursor, letter.id) if more else None
                        )
            if page.cursor is None:
                return DeadLetterPage(items, None)
            page_cursor = page.cursor
        # scanned enough for one call: hand back a cursor to continue from here
        return DeadLetterPage(items, join_cursor(page_cursor, None))

    async def iter_dead_letters(
        self, query: DeadLetterQuery | None = None, *, scan_limit: int | None = None
    ) -> AsyncIterator[DeadLetter]:
        """Every dead job matching ``query`` (see :func:`build_query`), newest first,
        read page by page. Jobs that die after the iteration began are not included."""
        query = query or DeadLetterQuery()
        backend = await self._dlq_backend()
        cursor: str | None = None
        scanned = 0
        while True:
            page = await backend.list_dead(self.name, query.where, cursor=cursor, limit=PAGE)
            for letter in page.items:
                scanned += 1
                if scan_limit is not None and scanned > scan_limit:
                    return
                if query.matches(letter):
                    yield letter
            if page.cursor is None:
                return
            cursor = page.cursor

    async def dead_letter_groups(
        self,
        *,
        name: Names = None,
        reason: Names = None,
        error_type: Names = None,
        since: When = None,
        until: When = None,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
        samples: int = 3,
    ) -> DeadLetterReport:
        """Error analysis: the dead jobs (newest ``scan_limit`` of those matching) grouped
        by the fingerprint of their last error, largest group first."""
        if scan_limit < 1 or samples < 1:
            raise ConfigurationError("scan_limit and samples must be >= 1")
        query = build_query(
            self.app.clock.now_ms(),
            name=name,
            reason=reason,
            error_type=error_type,
            since=since,
            until=until,
        )
        backend = await self._dlq_backend()
        total = (await backend.counts(self.name))[JobState.DEAD]
        groups: dict[str, _Group] = {}
        scanned = 0
        complete = True
        async for letter in self.iter_dead_letters(query, scan_limit=scan_limit + 1):
            if scanned == scan_limit:
                complete = False
                break
            scanned += 1
            print_ = fingerprint_of(letter)
            group = groups.get(print_.key)
            if group is None:
                group = groups[print_.key] = _Group(print_, letter)
            group.add(letter, samples)
        report = sorted(
            (g.freeze() for g in groups.values()), key=lambda g: (-g.count, -g.last_seen_ms)
        )
        return DeadLetterReport(self.name, report, scanned, complete, total)

    # -- administering -----------------------------------------------------------------

    async def redrive(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        all: bool = False,
        name: Names = None,
        reason: Names = None,
        error_type: Names = None,
        fingerprint: Names = None,
        since: When = None,
        until: When = None,
        dry_run: bool = False,
        rate: str | float | None = None,
        actor: str | None = None,
    ) -> list[str]:
        """Move dead jobs back to the queue; returns the ids moved (or, with
        ``dry_run``, the ids that would move).

        Choose the jobs by ``job_ids``, by filters (as in :meth:`dead_letters`), or
        ``all=True``. Attempts restart from zero; earlier errors stay in the history
        and a ``Redriven`` entry records ``actor`` (default ``user@host``). With
        ``rate`` (``"100/s"``, ``"600/m"`` or a number per second) the jobs are spread
        out: the first ones wait, the rest become ``delayed`` with due times at that
        rate, so the call returns at once and downstream systems see a steady flow.
        """
        per_second = parse_rate(rate)
        query = self._dlq_selection(
            job_ids, all, name, reason, error_type, fingerprint, since, until
        )
        backend = await self._dlq_backend()
        if job_ids is not None:
            ids = list(dict.fromkeys(job_ids))
            if dry_run:
                return await self._still_dead(backend, ids)
            return await self._move(backend, ids, per_second, actor, "by id")
        if dry_run:
            return [letter.id async for letter in self.iter_dead_letters(query)]
        moved: list[str] = []
        batch: list[str] = []
        mover = _Mover(self, backend, per_second, actor, query.describe())
        async for letter in self.iter_dead_letters(query):
            batch.append(letter.id)
            if len(batch) == PAGE:
                moved += await mover.move(batch)
                batch = []
        moved += await mover.move(batch)
        return moved

    async def purge(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        older_than: Seconds | None = None,
        all: bool = False,
        name: Names = None,
        reason: Names = None,
        error_type: Names = None,
        fingerprint: Names = None,
        since: When = None,
        until: When = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Delete dead jobs for good; returns the ids deleted (or that would be, with
        ``dry_run``). Choose them by ``job_ids``, by ``older_than`` (seconds or a
        timedelta since they died) and the filters of :meth:`dead_letters`, or
        ``all=True``. Only dead jobs are ever deleted."""
        if older_than is not None and job_ids is not None:
            raise ConfigurationError("pass job ids or filters (such as older_than), not both")
        query = self._dlq_selection(
            job_ids, all, name, reason, error_type, fingerprint, since, until, older_than
        )
        backend = await self._dlq_backend()
        if job_ids is not None:
            ids = list(dict.fromkeys(job_ids))
            if dry_run:
                return await self._still_dead(backend, ids)
            return await self._purge_ids(backend, ids)
        if dry_run:
            return [letter.id async for letter in self.iter_dead_letters(query)]
        deleted: list[str] = []
        batch: list[str] = []
        async for letter in self.iter_dead_letters(query):
            batch.append(letter.id)
            if len(batch) == PAGE:
                deleted += await self._purge_ids(backend, batch)
                batch = []
        deleted += await self._purge_ids(backend, batch)
        return deleted

    # -- blocking twins ----------------------------------------------------------------

    def dead_letters_sync(self, **kwargs: Any) -> DeadLetterPage:
        return self.app.portal.call(self.dead_letters, **kwargs)

    def dead_letter_groups_sync(self, **kwargs: Any) -> DeadLetterReport:
        return self.app.portal.call(self.dead_letter_groups, **kwargs)

    def redrive_sync(self, job_ids: Iterable[str] | None = None, **kwargs: Any) -> list[str]:
        return self.app.portal.call(self.redrive, job_ids, **kwargs)

    def purge_sync(self, job_ids: Iterable[str] | None = None, **kwargs: Any) -> list[str]:
        return self.app.portal.call(self.purge, job_ids, **kwargs)

    # -- helpers -----------------------------------------------------------------------

    async def _dlq_backend(self) -> Backend:
        backend = await self.app.backend()
        if not hasattr(backend, "list_dead"):
            raise ConfigurationError(
                f"the {backend.capabilities.name} backend does not support listing, "
                "grouping or purging dead letters yet (contract section 'dead letters')"
            )
        return backend

    def _dlq_selection(
        self,
        job_ids: Iterable[str] | None,
        everything: bool,
        name: Names,
        reason: Names,
        error_type: Names,
        fingerprint: Names,
        since: When,
        until: When,
        older_than: Seconds | None = None,
    ) -> DeadLetterQuery:
        query = build_query(
            self.app.clock.now_ms(),
            name=name,
            reason=reason,
            error_type=error_type,
            fingerprint=fingerprint,
            since=since,
            until=until,
            older_than=older_than,
        )
        if isinstance(job_ids, str):
            raise ConfigurationError("job_ids must be a list of ids, not one string")
        chosen = sum([job_ids is not None, not query.is_empty, everything])
        if chosen != 1:
            raise ConfigurationError(
                "choose the dead jobs in exactly one way: job ids, filters, or all=True"
            )
        return query

    async def _still_dead(self, backend: Backend, job_ids: Sequence[str]) -> list[str]:
        out = []
        for job_id in job_ids:
            record = await backend.get(self.name, job_id)
            if record is not None and record.state is JobState.DEAD:
                out.append(job_id)
        return out

    async def _move(
        self, backend: Backend, job_ids: list[str], rate: float | None, actor: str | None, how: str
    ) -> list[str]:
        return await _Mover(self, backend, rate, actor, how).move(job_ids)

    async def _purge_ids(self, backend: Backend, job_ids: list[str]) -> list[str]:
        deleted: list[str] = []
        for start in range(0, len(job_ids), MAX_BATCH):
            gone = await backend.purge_dead(self.name, job_ids[start : start + MAX_BATCH])
            await self.app.audit.append(
                [self.app.audit.entry("purge", queue=self.name, job_id=i) for i in gone], backend
            )
            deleted += gone
        return deleted


class _Mover:
    """Redrives batches of ids with one history note, optionally staggered by rate."""

    def __init__(
        self,
        ops: DeadLetterOps,
        backend: Backend,
        rate: float | None,
        actor: str | None,
        how: str,
    ) -> None:
        self.ops = ops
        self.backend = backend
        self.rate = rate
        self.clock = ops.app.clock
        self.start_ms = self.clock.now_ms()
        self.moved = 0
        self.step = MAX_BATCH if rate is None else max(1, min(MAX_BATCH, math.ceil(rate / 10)))
        who = actor or current_actor()
        self.who = who
        self.note = AttemptError(
            attempt=0,
            error_type="Redriven",
            message=f"Redriven by {who} ({how})",
            traceback="",
            worker_id=who,
            started_ms=None,
            ended_ms=self.start_ms,
        )

    async def move(self, job_ids: list[str]) -> list[str]:
        moved: list[str] = []
        for start in range(0, len(job_ids), self.step):
            chunk = job_ids[start : start + self.step]
            now = self.clock.now_ms()
            run_at = None
            if self.rate is not None:
                run_at = self.start_ms + math.floor(self.moved * 1000 / self.rate)
            done = await self.backend.redrive(
                self.ops.name, chunk, now_ms=now, run_at_ms=run_at, note=self.note
            )
            self.moved += len(done)
            moved += done
            audit = self.ops.app.audit
            await audit.append(
                [
                    audit.entry("redrive", queue=self.ops.name, job_id=i, actor=self.who)
                    for i in done
                ],
                self.backend,
            )
        return moved


class _Group:
    """Accumulates one fingerprint's jobs (fed newest first)."""

    def __init__(self, print_: Fingerprint, newest: DeadLetter) -> None:
        self.print = print_
        self.count = 0
        self.first_seen_ms = newest.finished_ms
        self.last_seen_ms = newest.finished_ms
        self.names: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.sample_ids: list[str] = []
        error = newest.last_error
        self.sample_message = error.message if error else (newest.reason or "")
        self.sample_traceback = error.traceback if error else ""

    def add(self, letter: DeadLetter, samples: int) -> None:
        self.count += 1
        self.first_seen_ms = min(self.first_seen_ms, letter.finished_ms)
        self.last_seen_ms = max(self.last_seen_ms, letter.finished_ms)
        self.names[letter.name] += 1
        self.reasons[letter.reason or "?"] += 1
        if len(self.sample_ids) < samples:
            self.sample_ids.append(letter.id)

    def freeze(self) -> DeadLetterGroup:
        return DeadLetterGroup(
            fingerprint=self.print.key,
            error_type=self.print.error_type,
            message=self.print.message,
            frame=self.print.frame,
            count=self.count,
            first_seen_ms=self.first_seen_ms,
            last_seen_ms=self.last_seen_ms,
            job_names=[name for name, _ in self.names.most_common()],
            reasons=dict(self.reasons.most_common()),
            sample_ids=self.sample_ids,
            sample_message=self.sample_message,
            sample_traceback=self.sample_traceback,
        )
