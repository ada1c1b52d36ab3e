"""The backend contract: the one seam between shigoto's core and any storage.

A backend persists jobs and performs *named transitions* on them. It decides nothing:
whether to retry, when, and why a job is dead are decided by the core
(:mod:`shigoto.retry`) and handed to the backend as plain values. No key, SQL
statement, connection or pipeline type appears here, so the conformance suite
(``tests/conformance``) runs unchanged against every backend.

Rules every implementation follows:

* **Time comes in.** Every method that needs "now" takes ``now_ms``; backends never
  read a clock, so tests freeze time.
* **Atomic transitions.** Each method documents its atomicity; a transition is never
  observable half-done, and a crash mid-call leaves the job in its old or new state.
* **Fencing.** Every transition out of ``active`` carries the lease token handed out
  by :meth:`Backend.claim`. A stale token changes nothing: single-job methods raise
  :class:`~shigoto.errors.LeaseLost`, batch methods report ``False`` for that job.
* **Jobs are addressed by (queue, id).** Ids are unique within a queue, which lets a
  backend keep each queue's data together (one Redis Cluster hash slot per queue).
* **Bounded work.** Every batch operation takes a ``limit``.
* **Nothing is deleted before it is finished.** A claimed job stays stored, leased,
  until complete / retry / dead_letter / release, or stalled recovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from ..job import AttemptError, JobOptions, JobRecord, JobState


class Capabilities(msgspec.Struct, frozen=True):
    """What a backend can do, so tests and tools read it instead of hard-coded skips."""

    name: str
    durable: bool = True
    """Jobs survive a restart of the backend."""
    multi_process: bool = True
    """Several worker processes may share it."""
    multi_host: bool = False
    """Workers on different machines may share it."""
    blocking_wait: bool = False
    """``wait_for_work`` is woken by enqueues from other processes (no polling)."""


class NewJob(msgspec.Struct, frozen=True):
    """A job to store. ``ready_ms > now_ms`` makes it ``delayed`` until then."""

    id: str
    queue: str
    name: str
    payload: bytes
    options: JobOptions
    created_ms: int
    ready_ms: int

    @property
    def priority(self) -> int:
        return self.options.priority


class Enqueued(msgspec.Struct, frozen=True):
    """Result of storing one job: ``created`` is False when the id already existed."""

    id: str
    created: bool
    state: JobState


class Claimed(msgspec.Struct, frozen=True):
    """A job handed to a worker, and the token that fences its finishing transitions."""

    record: JobRecord
    token: str


class Lease(msgspec.Struct, frozen=True):
    """A worker's hold on one active job."""

    queue: str
    job_id: str
    token: str


class LeaseStatus(msgspec.Struct, frozen=True):
    """Answer to a heartbeat: is the lease still ours, and was cancellation asked?"""

    job_id: str
    held: bool
    cancel_requested: bool = False


class Completion(msgspec.Struct, frozen=True):
    """A successful attempt to record. ``result`` is JSON bytes (or None)."""

    lease: Lease
    result: bytes | None
    started_ms: int


class Recovered(msgspec.Struct, frozen=True):
    """A stalled job found by :meth:`Backend.recover_stalled` and where it went."""

    job_id: str
    state: JobState
    """``waiting`` (another worker will take it) or ``dead`` (stalled too often)."""


class Backend(Protocol):
    """The storage seam. One instance belongs to one event loop."""

    capabilities: Capabilities

    async def connect(self) -> None:
        """Open connections and create or migrate storage. Idempotent."""
        ...

    async def close(self) -> None:
        """Release connections. Jobs are untouched."""
        ...

    # -- producing -------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], now_ms: int) -> list[Enqueued]:
        """Store jobs as ``waiting`` (or ``delayed`` when ``ready_ms > now_ms``).

        A job whose (queue, id) already exists is left untouched and reported with
        ``created=False`` and its current state: adding the same id twice enqueues once.
        Atomic per job; backends may store a whole batch in one transaction.
        """
        ...

    # -- consuming -------------------------------------------------------------------

    async def claim(
        self, queue: str, *, limit: int, worker_id: str, lease_ms: int, now_ms: int
    ) -> list[Claimed]:
        """Lease up to ``limit`` ready jobs of one queue, best first.

        Order: priority (higher first), then the time the job became ready, then
        enqueue order. Due delayed jobs are promoted first, so a claim never misses
        them. A paused queue yields nothing. Each claimed job becomes ``active`` with
        a fresh token, ``attempts + 1`` and a lease until ``now_ms + lease_ms``.
        Atomic: two concurrent claims never return the same job.
        """
        ...

    async def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> None:
        """Return when a job may be ready in one of ``queues``, or after ``timeout_s``.

        A hint, not a promise: callers claim afterwards and may find nothing. Must not
        miss an enqueue that happens between an empty claim and this call (backends
        without cross-process wake-ups simply poll within ``timeout_s``).
        """
        ...

    async def extend(
        self, leases: Sequence[Lease], *, lease_ms: int, now_ms: int
    ) -> list[LeaseStatus]:
        """Heartbeat: push each held lease to ``now_ms + lease_ms``.

        A lease no longer held (expired and recovered, job cancelled or removed) is
        reported ``held=False`` and not revived. Reports ``cancel_requested`` so a
        running handler learns of a cancellation. Atomic per lease.
        """
        ...

    async def update_progress(self, lease: Lease, progress: bytes) -> None:
        """Store a running job's progress (JSON bytes). Raises ``LeaseLost``."""
        ...

    async def complete(self, items: Sequence[Completion], now_ms: int) -> list[bool]:
        """Mark jobs ``completed`` with their results; ``False`` where the lease was lost.

        Applies each job's ``remove_on_complete`` retention (removing this job or
        trimming older completed ones). Atomic per job.
        """
        ...

    async def retry(
        self, lease: Lease, *, run_at_ms: int, error: AttemptError, now_ms: int
    ) -> None:
        """Record a failed attempt and schedule the next: ``delayed`` until ``run_at_ms``
        (or ``waiting`` when it is already due). Raises ``LeaseLost``. Atomic."""
        ...

    async def dead_letter(
        self, lease: Lease, *, reason: str, error: AttemptError | None, now_ms: int
    ) -> None:
        """Record the final failure and move the job to ``dead`` with ``reason``.

        Applies ``remove_on_fail`` retention. Raises ``LeaseLost``. Atomic.
        """
        ...

    async def release(
        self, leases: Sequence[Lease], *, now_ms: int, note: AttemptError | None = None
    ) -> list[bool]:
        """Give jobs back unfinished (shutdown): ``waiting`` again at the front of their
        priority, the attempt not counted. ``note`` records why in the job's history.
        ``False`` where the lease was lost. Atomic per job."""
        ...

    # -- housekeeping ----------------------------------------------------------------

    async def promote_due(self, queue: str, *, now_ms: int, limit: int) -> int:
        """Move up to ``limit`` delayed jobs whose time has come to ``waiting``, in due
        order. Returns how many moved."""
        ...

    async def recover_stalled(self, queue: str, *, now_ms: int, limit: int) -> list[Recovered]:
        """Take back up to ``limit`` active jobs whose lease expired before ``now_ms``.

        Each one's ``stalls`` grows by one; past its ``options.max_stalls`` it goes
        ``dead`` (reason ``stalled_too_often``), otherwise ``waiting`` with the
        attempt not counted. Its old token is void from then on. Atomic per job.
        """
        ...

    # -- reading ---------------------------------------------------------------------

    async def get(self, queue: str, job_id: str) -> JobRecord | None:
        """One job, or None."""
        ...

    async def counts(self, queue: str) -> dict[JobState, int]:
        """Number of jobs of the queue in every state (all states present)."""
        ...

    async def queues(self) -> list[str]:
        """Names of the queues that hold or held jobs, sorted."""
        ...

    async def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobRecord]:
        """Jobs of one queue in one state: waiting/delayed in run order, others newest
        first."""
        ...

    # -- administering ---------------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, *, now_ms: int) -> JobState | None:
        """Cancel a job. ``waiting``/``delayed`` become ``cancelled``; an ``active`` job is
        flagged (its worker sees it at the next heartbeat) and stays active. Returns the
        job's state afterwards, or None when there is no such job. Atomic."""
        ...

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (claims yield nothing) or resume a queue. Enqueues still work."""
        ...

    async def is_paused(self, queue: str) -> bool: ...

    async def redrive(self, queue: str, job_ids: Sequence[str], *, now_ms: int) -> list[str]:
        """Move ``dead`` jobs back to ``waiting`` with attempts and stalls reset (the error
        history is kept). Returns the ids that moved. Atomic per job."""
        ...
