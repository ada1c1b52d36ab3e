"""SQLite backend: one file, WAL journal, every transition one ``BEGIN IMMEDIATE``.

Why it is built this way:

* **One thread per backend instance** owns the connection (sqlite3 objects are not
  shareable across threads); coroutines hand work to it, so a slow disk or a lock held
  by another process never blocks the event loop. Calls made together travel to it
  together, and their writes share one transaction (``connection.py``).
* **The hot path is per batch, not per job**: a claim is one ``UPDATE … RETURNING``;
  completions and bulk enqueues are one ``executemany`` each, whose per-row answers
  stay exact (a short row count redoes the batch row by row); lease tokens name their
  row (``<seq>.<random>``) so completions find it by rowid.
* **WAL + ``BEGIN IMMEDIATE``**: readers never block the writer, and a transition takes
  the write lock up front instead of failing half-way on upgrade. Several processes
  share one file; ``busy_timeout`` makes them queue for the lock.
* **Partial indexes** per access path (ready, delayed, active) keep claims O(log n).
* **Migrations** are numbered SQL blocks applied in order, tracked by ``user_version``.
* **Wake-ups**: a commit that makes work available wakes the waiters of its process
  (an event) and of other processes (a datagram to each one's socket, ``wakeup.py``).
  A short claim also reads when the queue's next delayed job is due, and the wait
  after it ends then. Polling every ``poll_interval_s`` (default 0.1 s) remains the
  fallback, so ``Capabilities.blocking_wait`` stays False.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import msgspec

from ...errors import ConfigurationError, LeaseLost
from ...job import AttemptError, JobOptions, JobRecord, JobState, Retention
from ..contract import (
    Capabilities,
    Claimed,
    Completion,
    Enqueued,
    Lease,
    LeaseStatus,
    NewJob,
    Recovered,
)
from ..stored_options import changed_options, options_from
from .audit import SqliteAudit
from .batches import SqliteBatches
from .connection import SerialConnection
from .dead_letters import SqliteDeadLetters
from .idempotency import SqliteIdempotency, dedup_holder, take_dedup_key
from .job_admin import JobAdminMixin
from .metrics import SqliteMetrics
from .rate_limits import SqliteRateLimits, finish_claim, limited_claim
from .schedules import SchedulesMixin
from .wakeup import Listener, wakeups

T = TypeVar("T")

RECORD_COLUMNS = (
    "id, queue, name, payload, options, state, priority, created_ms, ready_ms, attempts, "
    "stalls, started_ms, finished_ms, worker_id, lease_until_ms, progress, result, errors, "
    "reason, cancel_requested, grp"
)
MIGRATIONS = (
    "migration_1",
    "schedules_v1",
    "idempotency_v1",
    "metrics_v1",
    "audit_v1",
    "batches_v1",
    "rate_limits_v1",
    "metrics_v2",
    "metrics_v3",
)
"""Applied in order; ``PRAGMA user_version`` counts how many ran. A feature adds its
tables as the next ``migration_N`` block in its own ``<feature>.sql`` file."""
ENQUEUE_CHUNK = 2000
TRIM_LIMIT = 1000
PROMOTE_ON_CLAIM = 1000

_errors_decoder = msgspec.json.Decoder(list[AttemptError])
_encoder = msgspec.json.Encoder()


def _load_queries() -> dict[str, str]:
    """Every named block of every ``*.sql`` file of this package (names are unique)."""
    blocks: dict[str, str] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        for match in re.finditer(r"^-- (\w+) --\n(.*?)(?=^-- \w+ --\n|\Z)", text, re.S | re.M):
            if match.group(1) in blocks:
                raise RuntimeError(f"SQL block {match.group(1)!r} is defined twice")
            blocks[match.group(1)] = match.group(2).strip().replace("{columns}", RECORD_COLUMNS)
    return blocks


SQL = _load_queries()
log = logging.getLogger("shigoto.sqlite")


def path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        raise ConfigurationError(
            f"SQLite URL {url!r} needs a file path (sqlite:///jobs.db or sqlite:////abs/jobs.db);"
            " an in-memory database cannot be shared between the worker and its heartbeats"
        )
    return path


class SqliteBackend(
    SchedulesMixin,
    SqliteDeadLetters,
    SqliteIdempotency,
    SqliteMetrics,
    SqliteAudit,
    SqliteBatches,
    JobAdminMixin,
    SqliteRateLimits,
):
    """The embedded backend. ``url`` is ``sqlite:///relative.db`` or ``sqlite:////abs.db``.

    URL options: ``?poll=0.05`` (seconds between polls for work from other processes),
    ``?synchronous=FULL`` (fsync every commit: survives power loss; the default NORMAL
    survives process crashes, the failure a job queue meets most).
    """

    capabilities = Capabilities(
        name="sqlite", multi_host=False, blocking_wait=False, rate_limits=True
    )

    def __init__(self, url: str) -> None:
        self.path = str(Path(path_from_url(url)).expanduser().absolute())
        self.poll_interval_s = 0.1
        self._synchronous = "NORMAL"
        for key, value in parse_qsl(urlsplit(url).query):
            if key == "poll":
                self.poll_interval_s = _positive_float(value, "poll")
            elif key == "synchronous" and value.upper() in {"NORMAL", "FULL"}:
                self._synchronous = value.upper()
            else:
                raise ConfigurationError(
                    f"unknown SQLite URL option {key}={value!r}; known: poll=SECONDS, "
                    "synchronous=NORMAL|FULL"
                )
        self._connection = SerialConnection(self.path, self._open)
        self._held_at: dict[str, float] = {}
        """Queue -> event-loop time its next slot opens, when a limit held a claim back."""
        self._due_at: dict[str, float] = {}
        """Queue -> event-loop time its earliest delayed job comes due (as of its last
        short claim): waits end then, not at the next poll."""
        self._capped: set[str] = set()
        """Queues held by max_active alone: a job of theirs finishing here wakes waits."""
        self._freed = asyncio.Event()
        self._listener: Listener | None = None
        self._no_listener = False

    # -- plumbing ----------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection's thread, outside a write transaction."""
        return await self._connection.call(fn, write=False)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` atomically in a ``BEGIN IMMEDIATE`` transaction (connection.py:
        possibly shared with other writes submitted at the same time, each in its own
        savepoint)."""
        return await self._connection.call(fn, write=True)

    async def connect(self) -> None:
        if not self._connection.is_open:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            await self._connection.open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        _enable_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        # Statement and savepoint journals (every multi-row UPDATE, and each call of a
        # group commit, see connection.py) in memory rather than in temporary files:
        # without it a claim could open, write and close a file per transaction.
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, name in enumerate(MIGRATIONS, start=1):
                if number > version:
                    for statement in _statements(SQL[name]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        await self._connection.close()

    # -- producing ---------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], now_ms: int) -> list[Enqueued]:
        results: list[Enqueued] = []
        for start in range(0, len(jobs), ENQUEUE_CHUNK):
            chunk = jobs[start : start + ENQUEUE_CHUNK]
            results.extend(
                await self._write(functools.partial(_enqueue, jobs=chunk, now_ms=now_ms))
            )
        wakeups.notify(self.path)
        return results

    # -- consuming ---------------------------------------------------------------------

    async def claim(
        self, queue: str, *, limit: int, worker_id: str, lease_ms: int, now_ms: int
    ) -> list[Claimed]:
        def tx(conn: sqlite3.Connection) -> tuple[list[Claimed], int | None, bool, int | None]:
            row = conn.execute(SQL["is_paused"], (queue,)).fetchone()
            if row is not None and row[0]:
                return [], None, False, None
            # Promote more than ``limit``: a due job of high priority must not lose to
            # earlier-due low-priority ones just because they were promoted first.
            promote = max(limit, PROMOTE_ON_CLAIM)
            conn.execute(SQL["promote_due"], {"queue": queue, "now": now_ms, "limit": promote})
            params: dict[str, Any] = {
                "queue": queue,
                "limit": limit,
                "worker": worker_id,
                "lease_until": now_ms + lease_ms,
                "now": now_ms,
            }
            # The queue's limits, in this same transaction (rate_limits.py)
            allowance = limited_claim(conn, queue, limit, now_ms)
            if allowance is None:
                rows = conn.execute(SQL["claim"], params).fetchall()
            elif allowance.seqs is not None:
                params["seqs"] = _encoder.encode(allowance.seqs).decode()
                rows = conn.execute(SQL["claim_seqs"], params).fetchall() if allowance.seqs else []
            elif allowance.count > 0:
                params["limit"] = allowance.count
                rows = conn.execute(SQL["claim"], params).fetchall()
            else:
                rows = []
            if allowance is not None:
                finish_claim(conn, queue, allowance, [r[20] for r in rows], limit, now_ms)
            claimed = []
            for r in rows:
                try:
                    claimed.append(Claimed(record=_record(r), token=r[-1]))
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    _bury_corrupt(conn, queue, r, exc, now_ms, worker_id)
            claimed.sort(key=lambda c: (-c.record.priority, c.record.ready_ms))
            # Fewer than asked: the worker is about to wait, and learns until when at most
            next_due = (
                conn.execute(SQL["next_due"], (queue,)).fetchone()[0] if len(rows) < limit else None
            )
            if allowance is None:
                return claimed, None, False, next_due
            return claimed, allowance.hold_until_ms, allowance.capped, next_due

        if limit <= 0:
            return []
        claimed, hold_until_ms, capped, next_due_ms = await self._write(tx)
        if next_due_ms is not None:
            # wait_for_work sleeps no longer than this: a delayed job starts on time
            delay_s = max(0, next_due_ms - now_ms) / 1000
            self._due_at[queue] = asyncio.get_running_loop().time() + delay_s
        else:
            self._due_at.pop(queue, None)
        if hold_until_ms is not None:
            # wait_for_work sleeps until then instead of polling a queue that is held
            delay_s = max(0, hold_until_ms - now_ms) / 1000
            self._held_at[queue] = asyncio.get_running_loop().time() + delay_s
        else:
            self._held_at.pop(queue, None)
        if capped:
            self._capped.add(queue)
            self._freed.clear()  # set again by a job of ours finishing (_slot_freed)
        else:
            self._capped.discard(queue)
        return claimed

    async def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        held = [self._held_at.get(queue, now) - now for queue in queues]
        if held and min(held) > 0:  # every queue is held by its limits: nothing to poll
            if self._capped.intersection(queues):
                # held by max_active: a job finishing in this process frees a slot now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), min(timeout_s, min(held)))
            else:
                await asyncio.sleep(min(timeout_s, min(held)))
            return
        timeout = min(timeout_s, self.poll_interval_s)
        due = [self._due_at[queue] - now for queue in queues if queue in self._due_at]
        if due:
            timeout = min(timeout, max(min(due), 0.0) + 0.001)
        listener = self._listener_on(loop)
        event = asyncio.Event()
        wakeups.add(self.path, loop, event)
        try:
            if listener is not None and listener.woken:
                return  # work was committed since the last wait: claim before waiting
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            if listener is not None:
                listener.woken = False
            wakeups.remove(self.path, loop, event)

    def _listener_on(self, loop: asyncio.AbstractEventLoop) -> Listener | None:
        """This backend's wake-up socket (bound on the first wait), so that other
        processes' commits end its waits (see :mod:`.wakeup`); None where there is
        none: it then finds their jobs by polling."""
        if self._listener is None and not self._no_listener:
            try:
                self._listener = Listener(self.path, loop)
            except OSError as exc:
                self._no_listener = True
                log.debug(
                    "no SQLite wake-up socket (%s): polling every %g s", exc, self.poll_interval_s
                )
        if self._listener is not None and self._listener.loop is not loop:
            return None  # a wait from another event loop: its reader is not there
        return self._listener

    async def extend(
        self, leases: Sequence[Lease], *, lease_ms: int, now_ms: int
    ) -> list[LeaseStatus]:
        def tx(conn: sqlite3.Connection) -> list[LeaseStatus]:
            out = []
            for lease in leases:
                row = conn.execute(
                    SQL["extend"],
                    {
                        "queue": lease.queue,
                        "id": lease.job_id,
                        "token": lease.token,
                        "lease_until": now_ms + lease_ms,
                    },
                ).fetchone()
                out.append(
                    LeaseStatus(
                        lease.job_id, held=row is not None, cancel_requested=bool(row and row[0])
                    )
                )
            return out

        return await self._write(tx) if leases else []

    async def update_progress(self, lease: Lease, progress: bytes) -> None:
        def tx(conn: sqlite3.Connection) -> int:
            return conn.execute(
                SQL["update_progress"],
                {
                    "queue": lease.queue,
                    "id": lease.job_id,
                    "token": lease.token,
                    "progress": progress,
                },
            ).rowcount

        if not await self._write(tx):
            raise LeaseLost(f"job {lease.job_id}: lease lost, progress not recorded")

    async def complete(self, items: Sequence[Completion], now_ms: int) -> list[bool]:
        def tx(conn: sqlite3.Connection) -> list[bool]:
            out = [False] * len(items)
            trims: dict[tuple[str, Retention], None] = {}
            updates: list[tuple[int, tuple[Any, ...]]] = []
            removes: list[tuple[int, tuple[Any, ...]]] = []
            trimmed: list[tuple[int, Retention]] = []  # kept jobs whose queue is trimmed
            for i, item in enumerate(items):
                lease = item.lease
                policy = item.retention  # the worker's copy saves a SELECT per job
                seq = _token_seq(lease.token)
                if policy is None or seq is None:
                    out[i] = _complete_one(conn, item, now_ms, trims)
                elif policy.removes_immediately:
                    removes.append((i, (seq, lease.token, lease.queue, lease.job_id)))
                else:
                    key = (seq, lease.token, lease.queue, lease.job_id)
                    updates.append((i, (item.result, now_ms, *key)))
                    if not policy.keeps_all:
                        trimmed.append((i, policy))
            _run_many(conn, SQL["complete_many"], updates, out)
            _run_many(conn, SQL["complete_and_remove_many"], removes, out)
            for i, policy in trimmed:
                if out[i]:
                    trims[(items[i].lease.queue, policy)] = None
            for queue, policy in trims:
                _trim(conn, queue, JobState.COMPLETED, policy, now_ms)
            return out

        if not items:
            return []
        done = await self._write(tx)
        if self._capped:
            for item in items:
                self._slot_freed(item.lease.queue)
        return done

    async def retry(
        self, lease: Lease, *, run_at_ms: int, error: AttemptError, now_ms: int
    ) -> None:
        state = JobState.DELAYED if run_at_ms > now_ms else JobState.WAITING

        def tx(conn: sqlite3.Connection) -> int:
            return conn.execute(
                SQL["retry"],
                {
                    "queue": lease.queue,
                    "id": lease.job_id,
                    "token": lease.token,
                    "state": state.value,
                    "now": now_ms,
                    "run_at": run_at_ms,
                    "error": _encoder.encode(error),
                },
            ).rowcount

        if not await self._write(tx):
            raise LeaseLost(f"job {lease.job_id}: lease lost, retry not recorded")
        self._slot_freed(lease.queue)
        if state is JobState.WAITING:
            wakeups.notify(self.path)

    async def dead_letter(
        self, lease: Lease, *, reason: str, error: AttemptError | None, now_ms: int
    ) -> None:
        def tx(conn: sqlite3.Connection) -> int:
            params: dict[str, Any] = {
                "queue": lease.queue,
                "id": lease.job_id,
                "token": lease.token,
            }
            options = _job_options(conn, lease)
            policy = options.remove_on_fail if options is not None else Retention()
            if policy.removes_immediately:
                return conn.execute(SQL["dead_letter_and_remove"], params).rowcount
            params.update(
                reason=reason, now=now_ms, error=None if error is None else _encoder.encode(error)
            )
            done = conn.execute(SQL["dead_letter"], params).rowcount
            if done and not policy.keeps_all:
                _trim(conn, lease.queue, JobState.DEAD, policy, now_ms)
            return done

        if not await self._write(tx):
            raise LeaseLost(f"job {lease.job_id}: lease lost, dead-letter not recorded")
        self._slot_freed(lease.queue)

    async def release(
        self, leases: Sequence[Lease], *, now_ms: int, note: AttemptError | None = None
    ) -> list[bool]:
        encoded = None if note is None else _encoder.encode(note)

        def tx(conn: sqlite3.Connection) -> list[bool]:
            return [
                conn.execute(
                    SQL["release"],
                    {
                        "queue": lease.queue,
                        "id": lease.job_id,
                        "token": lease.token,
                        "note": encoded,
                        "now": now_ms,
                    },
                ).rowcount
                == 1
                for lease in leases
            ]

        if not leases:
            return []
        out = await self._write(tx)
        wakeups.notify(self.path)
        return out

    # -- housekeeping --------------------------------------------------------------------

    async def promote_due(self, queue: str, *, now_ms: int, limit: int) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            return conn.execute(
                SQL["promote_due"], {"queue": queue, "now": now_ms, "limit": limit}
            ).rowcount

        moved = await self._write(tx)
        if moved:
            wakeups.notify(self.path)
        return moved

    async def recover_stalled(self, queue: str, *, now_ms: int, limit: int) -> list[Recovered]:
        def tx(conn: sqlite3.Connection) -> list[Recovered]:
            rows = conn.execute(
                SQL["recover_stalled"], {"queue": queue, "now": now_ms, "limit": limit}
            ).fetchall()
            return [Recovered(job_id=r[0], state=JobState(r[1])) for r in rows]

        recovered = await self._write(tx)
        if recovered:
            wakeups.notify(self.path)
        return recovered

    # -- reading -----------------------------------------------------------------------

    async def get(self, queue: str, job_id: str) -> JobRecord | None:
        def read(conn: sqlite3.Connection) -> JobRecord | None:
            row = conn.execute(SQL["get"], (queue, job_id)).fetchone()
            return None if row is None else _record(row)

        return await self._run(read)

    async def counts(self, queue: str) -> dict[JobState, int]:
        def read(conn: sqlite3.Connection) -> dict[JobState, int]:
            counts = dict.fromkeys(JobState, 0)
            for state, n in conn.execute(SQL["counts"], (queue,)):
                counts[JobState(state)] = n
            return counts

        return await self._run(read)

    async def queues(self) -> list[str]:
        return await self._run(lambda c: [r[0] for r in c.execute(SQL["queues"])])

    async def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobRecord]:
        query = {
            JobState.WAITING: "list_ready",
            JobState.DELAYED: "list_delayed",
        }.get(state, "list_recent")
        params = {"queue": queue, "state": state.value, "limit": limit, "offset": offset}
        return await self._run(lambda c: [_record(r) for r in c.execute(SQL[query], params)])

    # -- administering -------------------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, *, now_ms: int) -> JobState | None:
        def tx(conn: sqlite3.Connection) -> JobState | None:
            params = {"queue": queue, "id": job_id, "now": now_ms}
            conn.execute(SQL["cancel_pending"], params)
            conn.execute(SQL["cancel_active"], params)
            row = conn.execute(SQL["existing_state"], (queue, job_id)).fetchone()
            return None if row is None else JobState(row[0])

        return await self._write(tx)

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._write(
            lambda c: c.execute(SQL["set_paused"], {"queue": queue, "paused": int(paused)})
        )
        if not paused:
            wakeups.notify(self.path)

    async def is_paused(self, queue: str) -> bool:
        def read(conn: sqlite3.Connection) -> bool:
            row = conn.execute(SQL["is_paused"], (queue,)).fetchone()
            return bool(row and row[0])

        return await self._run(read)

    async def redrive(
        self,
        queue: str,
        job_ids: Sequence[str],
        *,
        now_ms: int,
        run_at_ms: int | None = None,
        note: AttemptError | None = None,
    ) -> list[str]:
        run_at = max(now_ms, run_at_ms or now_ms)
        state = JobState.DELAYED if run_at > now_ms else JobState.WAITING
        params: dict[str, Any] = {
            "queue": queue,
            "now": now_ms,
            "run_at": run_at,
            "state": state.value,
            "note": None if note is None else _encoder.encode(note),
        }

        def tx(conn: sqlite3.Connection) -> list[str]:
            return [
                job_id
                for job_id in job_ids
                if conn.execute(SQL["redrive"], {**params, "id": job_id}).rowcount
            ]

        moved = await self._write(tx)
        if moved and state is JobState.WAITING:
            wakeups.notify(self.path)
        return moved


# -- helpers run on the backend's thread ------------------------------------------------


def _positive_float(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number <= 0:
        raise ConfigurationError(
            f"SQLite URL option {name} must be a positive number, got {value!r}"
        )
    return number


def _statements(script: str) -> Iterable[str]:
    """Split a migration block into statements (comment lines may contain ';')."""
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return (s.strip() for s in code.split(";") if s.strip())


def _enqueue(conn: sqlite3.Connection, *, jobs: Sequence[NewJob], now_ms: int) -> list[Enqueued]:
    """Store ``jobs``: the common bulk case (no dedup keys, no id already taken) in one
    ``executemany``; anything else, or a chunk where some row was not inserted, one
    job at a time (the chunk's inserts undone first), which answers each job exactly."""
    if any(job.dedup_key is not None for job in jobs):
        return _enqueue_each(conn, jobs=jobs, now_ms=now_ms)
    for queue in {job.queue for job in jobs}:
        conn.execute(SQL["register_queue"], (queue,))
    encoded: dict[int, bytes] = {}  # the jobs of one add_bulk share one options object
    rows = []
    states = []
    for job in jobs:
        options = job.options
        raw = encoded.get(id(options))
        if raw is None:
            raw = encoded[id(options)] = _encode_options(options)
        state = JobState.DELAYED if job.ready_ms > now_ms else JobState.WAITING
        states.append(state)
        rows.append(
            (
                job.id,
                job.queue,
                job.name,
                job.payload,
                raw,
                state.value,
                options.priority,
                job.created_ms,
                max(job.ready_ms, job.created_ms),
                options.max_stalls,
                job.group,
            )
        )
    conn.execute("SAVEPOINT enqueue_many")
    if conn.executemany(SQL["enqueue_many"], rows).rowcount == len(rows):
        conn.execute("RELEASE enqueue_many")
        return [
            Enqueued(id=job.id, created=True, state=state)
            for job, state in zip(jobs, states, strict=True)
        ]
    conn.execute("ROLLBACK TO enqueue_many")
    conn.execute("RELEASE enqueue_many")
    return _enqueue_each(conn, jobs=jobs, now_ms=now_ms)


def _enqueue_each(
    conn: sqlite3.Connection, *, jobs: Sequence[NewJob], now_ms: int
) -> list[Enqueued]:
    out: list[Enqueued] = []
    seen_queues: set[str] = set()
    for job in jobs:
        if job.queue not in seen_queues:
            conn.execute(SQL["register_queue"], (job.queue,))
            seen_queues.add(job.queue)
        if job.dedup_key is not None and (holder := dedup_holder(conn, job, now_ms)):
            out.append(holder)
            continue
        state = JobState.DELAYED if job.ready_ms > now_ms else JobState.WAITING
        created = (
            conn.execute(
                SQL["enqueue"],
                {
                    "id": job.id,
                    "queue": job.queue,
                    "name": job.name,
                    "payload": job.payload,
                    "options": _encode_options(job.options),
                    "state": state.value,
                    "priority": job.options.priority,
                    "created_ms": job.created_ms,
                    "ready_ms": max(job.ready_ms, job.created_ms),
                    "max_stalls": job.options.max_stalls,
                    "grp": job.group,
                },
            ).rowcount
            == 1
        )
        if not created:
            state = JobState(conn.execute(SQL["existing_state"], (job.queue, job.id)).fetchone()[0])
        elif job.dedup_key is not None:
            take_dedup_key(conn, job, now_ms)
        out.append(Enqueued(id=job.id, created=created, state=state))
    return out


def _token_seq(token: str) -> int | None:
    """The row a lease's token names (``<seq>.<random>``, see ``-- claim --``); None for
    a token in another form (claimed before tokens named their row)."""
    seq, dot, _ = token.partition(".")
    return int(seq) if dot and seq.isdigit() else None


def _complete_one(
    conn: sqlite3.Connection,
    item: Completion,
    now_ms: int,
    trims: dict[tuple[str, Retention], None],
) -> bool:
    """``complete`` of one lease by (queue, id, token), reading the job's retention
    when the caller did not pass it."""
    lease = item.lease
    params: dict[str, Any] = {"queue": lease.queue, "id": lease.job_id, "token": lease.token}
    policy = item.retention
    if policy is None:
        options = _job_options(conn, lease)
        policy = None if options is None else options.remove_on_complete
    if policy is not None and policy.removes_immediately:
        return bool(conn.execute(SQL["complete_and_remove"], params).rowcount == 1)
    params.update(result=item.result, now=now_ms)
    ok = conn.execute(SQL["complete"], params).rowcount == 1
    if ok and policy is not None and not policy.keeps_all:
        trims[(lease.queue, policy)] = None
    return ok


def _run_many(
    conn: sqlite3.Connection, sql: str, rows: list[tuple[int, tuple[Any, ...]]], out: list[bool]
) -> None:
    """Run a fenced statement that changes at most one row per parameter tuple for all
    ``rows`` (``(index in out, parameters)``) in one ``executemany``, and set
    ``out[index]`` to whether that row changed.

    ``executemany`` only reports the total: when it is less than ``len(rows)`` (a lost
    lease, or the same lease twice), the batch is undone and every row run alone, so
    each answer stays exact. That costs one more pass, only when a lease was lost."""
    if not rows:
        return
    conn.execute("SAVEPOINT many")
    if conn.executemany(sql, [params for _, params in rows]).rowcount == len(rows):
        conn.execute("RELEASE many")
        for i, _ in rows:
            out[i] = True
        return
    conn.execute("ROLLBACK TO many")
    conn.execute("RELEASE many")
    for i, params in rows:
        out[i] = conn.execute(sql, params).rowcount == 1


def _job_options(conn: sqlite3.Connection, lease: Lease) -> JobOptions | None:
    row = conn.execute(
        "SELECT options FROM jobs WHERE queue = ? AND id = ? AND token = ?",
        (lease.queue, lease.job_id, lease.token),
    ).fetchone()
    return None if row is None else _decode_options(row[0])


@functools.lru_cache(maxsize=256)
def _encode_options(options: JobOptions) -> bytes:
    """``options`` as stored (:mod:`shigoto.backends.stored_options`), cached: the jobs
    of one handler mostly share one options value."""
    return _encoder.encode(changed_options(options))


@functools.lru_cache(maxsize=256)
def _decode_options(raw: bytes) -> JobOptions:
    """Options as stored: the jobs of one bulk enqueue share the same bytes, and a
    ``JobOptions`` is immutable, so each distinct value is decoded once, not per claim
    and again per completion."""
    return options_from(msgspec.json.decode(raw, type=dict[str, Any]))


def _decodes_options(raw: Any) -> bool:
    try:
        _decode_options(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
        return False
    return True


def _trim(
    conn: sqlite3.Connection, queue: str, state: JobState, policy: Retention, now_ms: int
) -> None:
    if policy.count is not None:
        conn.execute(
            SQL["trim_by_count"], {"queue": queue, "state": state.value, "keep": policy.count}
        )
    if policy.age_s is not None:
        conn.execute(
            SQL["trim_by_age"],
            {
                "queue": queue,
                "state": state.value,
                "before": now_ms - int(policy.age_s * 1000),
                "limit": TRIM_LIMIT,
            },
        )


def _decodes(decoder: msgspec.json.Decoder[Any], raw: Any) -> bool:
    try:
        decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return True


def _bury_corrupt(
    conn: sqlite3.Connection,
    queue: str,
    row: Sequence[Any],
    exc: Exception,
    now_ms: int,
    worker_id: str,
) -> None:
    """Dead-letter a just-claimed row that does not decode (``-- dead_letter_corrupt --``)."""
    error = AttemptError(
        attempt=int(row[9]),
        error_type="CorruptRecord",
        message=f"the stored job record could not be decoded: {exc}"[:2000],
        traceback="",
        worker_id=worker_id,
        started_ms=now_ms,
        ended_ms=now_ms,
    )
    conn.execute(
        SQL["dead_letter_corrupt"],
        {
            "queue": queue,
            "id": row[0],
            "token": row[-1],
            "now": now_ms,
            "options_ok": _decodes_options(row[4]),
            "errors_ok": _decodes(_errors_decoder, row[17]),
            "error": msgspec.json.encode(error).decode(),
        },
    )


_STATES = {state.value: state for state in JobState}


def _record(row: Sequence[Any]) -> JobRecord:
    """A ``JobRecord`` from the ``{columns}`` of a row (positional: the columns are in
    the record's field order). Claims decode 50 of these per call on the connection's
    thread, so the common values skip the decoders: a known state by dict lookup, an
    empty error history without JSON."""
    state = _STATES.get(row[5]) or JobState(row[5])
    errors = row[17]
    return JobRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        _decode_options(row[4]),
        state,
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
        [] if errors == "[]" else _errors_decoder.decode(errors),
        row[18],
        bool(row[19]),
        row[20],
    )


def _enable_wal(conn: sqlite3.Connection, wait_s: float = 30.0) -> None:
    """Switch the file to WAL, waiting out other connections that are opening it too.

    When several connections open a fresh file at once (a worker, its heartbeat thread
    and a producer; or several worker processes), switching the journal mode can fail
    with SQLITE_BUSY at once, without the busy handler, while another connection holds
    the migration transaction. So retry for as long as ``busy_timeout`` would wait.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) in (
                sqlite3.SQLITE_BUSY,
                sqlite3.SQLITE_LOCKED,
            )
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
