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

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import msgspec

from ..job import AttemptError, JobOptions, JobRecord, JobState, Retention


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
    rate_limits: bool = False
    """Implements the rate-limit section (``set_limits``, ``get_limits``, ``postpone``,
    limits enforced by ``claim``)."""
    job_records: bool = True
    """Keeps a record per job: ``get``, ``list_jobs``, ``counts_by_name``, ``queues``,
    exact ``counts``, results, progress, unique ids, ``cancel`` / ``remove`` /
    ``promote`` / ``redrive`` / ``replace_payload``, pause. False (``amqp://`` without a
    record store): a job lives only in its message, and these raise
    ``CapabilityAbsent``; ``counts`` is the broker's view (see the backend)."""
    explicit_time: bool = True
    """Delays, leases and stall recovery follow the ``now_ms`` callers pass, so tests can
    freeze time. False: the broker's own clock runs delays, and a lease lasts as long as
    its worker's connection (a dead worker's job is redelivered, not recovered)."""
    idempotency: bool = True
    """Implements the idempotency section (dedup keys, ``once_claim`` / ``once_mark``)."""
    dead_letter_queue: bool = True
    """Lists, purges and redrives dead jobs (``list_dead``, ``purge_dead``, ``redrive``)."""
    schedules: bool = True
    """Stores schedule tick states and run-time schedules."""
    batches: bool = True
    """Implements the batches section."""
    metrics: bool = True
    """Stores metrics, worker beats and alert states (reads work from any process)."""
    audit: bool = True
    """Stores the audit trail."""
    routing: bool = False
    """Routes jobs by key to every bound queue (``bind_route``, ``route``)."""
    exact_priority: bool = True
    """Any int priority orders claims. False: the broker's priority levels are few
    (RabbitMQ: ``max_priority + 1`` on classic queues, none on quorum queues)."""


class NewJob(msgspec.Struct, frozen=True, gc=False):
    """A job to store. ``ready_ms > now_ms`` makes it ``delayed`` until then.

    Not tracked by the garbage collector (it can be in no reference cycle): a bulk add
    holds thousands at once, and tracked they made the collector run twice as often."""

    id: str
    queue: str
    name: str
    payload: bytes
    options: JobOptions
    created_ms: int
    ready_ms: int
    dedup_key: str | None = None
    """Enqueue-side de-duplication (see :meth:`Backend.enqueue`); distinct from ``id``."""
    dedup_ttl_ms: int | None = None
    """With ``dedup_key``: also hold the key this long after ``created_ms``, even once
    the job has finished. None: only while the job is live."""
    group: str | None = None
    """The job's rate-limit group (computed by the core from ``rate_limit_key``): a
    non-empty string without NUL, or None. Only a queue with a group rate limit looks
    at it (see :meth:`Backend.claim`)."""

    @property
    def priority(self) -> int:
        return self.options.priority


class Enqueued(msgspec.Struct, frozen=True, gc=False):
    """Result of storing one job: ``created`` is False when the id already existed.
    Untracked by the garbage collector, like :class:`NewJob`."""

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
    retention: Retention | None = None
    """The job's ``remove_on_complete`` as claimed (options never change after
    enqueue), so a backend that stores options apart from the state it updates need
    not read them per job; None: the backend looks them up."""


class Recovered(msgspec.Struct, frozen=True):
    """A stalled job found by :meth:`Backend.recover_stalled` and where it went."""

    job_id: str
    state: JobState
    """``waiting`` (another worker will take it) or ``dead`` (stalled too often)."""


class ScheduleState(msgspec.Struct, frozen=True):
    """What a backend keeps per schedule name (see the ``schedules`` methods).

    The backend never interprets a schedule: ``definition`` is opaque bytes encoded by
    :mod:`shigoto.scheduler` (present only for schedules added at run time; schedules
    declared in code live in the code), and tick times are plain numbers.
    """

    name: str
    since_ms: int
    """When a scheduler first registered the name: ticks at or before it are never due."""
    last_fire_ms: int | None = None
    """The newest tick claimed so far (monotonic: a claim never moves it backwards)."""
    last_queue: str | None = None
    last_job_id: str | None = None
    """Where the job of the newest claimed tick went (it may since have been removed)."""
    last_claimed_ms: int | None = None
    """When that tick was claimed (``- last_fire_ms`` = how late the scheduler was)."""
    definition: bytes | None = None


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

        ``dedup_key`` (backends implementing the idempotency section): if the queue holds
        the key for a job that is still live (waiting, delayed, active), or the key's
        ``dedup_ttl_ms`` since that job's creation has not passed, nothing is stored
        and that job is reported (its id, ``created=False``, its state; ``completed``
        when it was already removed). Otherwise the new job is stored and takes the
        key. Check and claim are one atomic step: concurrent producers of one key store
        one job.
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

        The queue's :class:`QueueLimits` are enforced here, in the same atomic step:
        nothing while the queue is held (``held_until_ms > now_ms``); at most
        ``max_active - active`` jobs; at most ``rate_max`` claims in any window
        ``(t - rate_period_ms, t]`` (every claimed job is one entry of a sliding log).
        With a group rate limit, the claim looks at the first ``GROUP_SCAN`` ready jobs,
        takes one job per group in turn (groups in name order, starting after the group
        served last; jobs without a group form one more group with no group limit),
        applies each group's own window and hold, and moves the scanned jobs of a group
        that is over its limit or held to ``delayed`` until that group's next slot, so
        a noisy group's backlog never hides the others' jobs.

        A claim that a limit held back (fewer jobs than asked although jobs wait)
        remembers when the queue's next slot opens, and :meth:`wait_for_work` does not
        wait on that queue beyond it — nor wake up for it before it (rate limits), so
        idle workers sleep instead of spinning.
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
        (or ``waiting`` when it is already due). A job whose cancellation was requested
        while it ran becomes ``cancelled`` instead. Raises ``LeaseLost``. Atomic."""
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
        priority, the attempt not counted (``cancelled``, attempt kept, if cancellation
        was requested while it ran). ``note`` records why in the job's history.
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

    # -- rate limits ---------------------------------------------------------------------
    # Issue 11. Queue settings stored with the queue (every worker agrees, like pause);
    # enforced by :meth:`claim`. Parsing and the user-facing forms live in shigoto.limits.

    async def set_limits(self, queue: str, limits: QueueLimits) -> None:
        """Replace the queue's limits (``QueueLimits()`` removes them). The sliding logs
        and holds are kept, so changing a limit neither resets nor skips a window.
        Atomic."""
        ...

    async def get_limits(self, queue: str, *, now_ms: int) -> QueueLimits:
        """The queue's limits (``QueueLimits()`` when none), with ``held_until_ms`` set
        when the queue is held beyond ``now_ms``. Read-only."""
        ...

    async def postpone(self, lease: Lease, *, run_at_ms: int, hold: bool, now_ms: int) -> None:
        """Give a job back for later without counting its attempt (the handler raised
        :class:`~shigoto.errors.RateLimited`): ``delayed`` until ``run_at_ms``
        (``waiting`` when already due), ``attempts - 1``, the lease void. With ``hold``,
        the job's group — or the whole queue for a job without a group — yields no
        claims before ``run_at_ms`` (a later hold wins, an earlier one is ignored). A job
        whose cancellation was requested while it ran becomes ``cancelled`` instead.
        Raises ``LeaseLost``. Atomic."""
        ...

    async def redrive(
        self,
        queue: str,
        job_ids: Sequence[str],
        *,
        now_ms: int,
        run_at_ms: int | None = None,
        note: AttemptError | None = None,
    ) -> list[str]:
        """Move ``dead`` jobs back to ``waiting`` with attempts and stalls reset (the error
        history is kept). Returns the ids that moved. Atomic per job.

        ``run_at_ms`` later than ``now_ms`` makes them ``delayed`` until then (the core
        staggers a rate-limited redrive this way); ``note`` is appended to each moved
        job's history (who redrove it)."""
        ...

    # -- schedules -------------------------------------------------------------------

    async def register_schedules(self, names: Sequence[str], *, now_ms: int) -> None:
        """Start tracking schedules: each name not yet known gets a state with
        ``since_ms = now_ms``; known names are left untouched (so the earliest
        registration wins). Atomic per name."""
        ...

    async def claim_tick(self, schedule: str, fire_ms: int, job: NewJob, *, now_ms: int) -> bool:
        """Claim one tick of a schedule and enqueue its job, exactly once.

        In one atomic step: when the schedule's ``last_fire_ms`` is unset or below
        ``fire_ms``, set it to ``fire_ms`` (with ``last_queue``/``last_job_id`` of
        ``job`` and ``last_claimed_ms = now_ms``; an unknown name gets a state with
        ``since_ms = now_ms``), store ``job`` as :meth:`enqueue` would (an existing id
        is left untouched) and return True. Otherwise change nothing and return False.

        The tick state, not the job id, is what makes this exactly-once: the job of a
        tick may already be completed and removed (``remove_on_complete``) when a slow
        scheduler tries the same tick. Callers claim a schedule's ticks in ascending
        order, so a late scheduler can never fire a tick older than one already fired.
        """
        ...

    async def schedule_states(self, *, limit: int = 1000) -> list[ScheduleState]:
        """Every schedule state (sorted by name, at most ``limit``)."""
        ...

    async def save_schedule(self, name: str, definition: bytes, *, now_ms: int) -> None:
        """Create or replace the stored definition of a run-time schedule. Its tick state
        (``last_fire_ms``) is kept, so replacing a definition neither repeats nor skips
        a tick. Atomic."""
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Forget a schedule: its definition and its tick state. False when unknown.
        Atomic."""
        ...

    # -- dead letters ------------------------------------------------------------------
    # Listing and removing ``dead`` jobs for operators (issue 5). Grouping by error
    # fingerprint happens in the core (shigoto.dead_letters) over these pages, so every
    # backend groups identically and the fingerprint rules can change without a migration.

    async def list_dead(
        self, queue: str, where: DeadFilter, *, cursor: str | None = None, limit: int = 100
    ) -> DeadPage:
        """One page of the queue's dead jobs matching ``where``, newest death first
        (``finished_ms`` descending, then enqueue order descending).

        ``cursor`` is the ``DeadPage.cursor`` of the previous page (opaque, backend
        defined); it is keyset-based, so deaths and removals between calls neither
        repeat nor skip older jobs, and jobs that died after the first page was read do
        not appear on later pages. A page may hold fewer than ``limit`` items even when
        more match (a backend may bound the work of one call); only ``cursor=None``
        means the end. ``limit`` is at most 1000. Read-only.
        """
        ...

    async def purge_dead(self, queue: str, job_ids: Sequence[str]) -> list[str]:
        """Delete the listed jobs that are ``dead`` (others are left alone). Returns the
        ids deleted, in the order given. Atomic per job."""
        ...

    # -- idempotency -------------------------------------------------------------------
    # Execution-side once-records (``ctx.once``), scoped per queue. A backend that
    # implements this section also honours ``NewJob.dedup_key`` in :meth:`enqueue`.
    # Lifecycle of one key: claimed (by an owner, until a lease ends) -> done (with an
    # optional result, until a TTL ends) -> forgotten. Expired records are removed by
    # the backend as it goes, a bounded number per call.

    async def once_claim(
        self, queue: str, key: str, *, owner: str, lease_ms: int, now_ms: int
    ) -> OnceClaim:
        """Ask to perform the effect named ``key``. In one atomic step:

        * a ``done`` record whose TTL has not passed → ``status="done"`` with its result;
        * an unexpired claim held by another owner → ``status="busy"`` with ``holder``
          and ``until_ms`` (the claim's end), nothing changed;
        * otherwise (no record, an expired one, or a claim by this same owner) → the
          key is claimed by ``owner`` until ``now_ms + lease_ms``: ``status="claimed"``.
        """
        ...

    async def once_mark(
        self,
        queue: str,
        key: str,
        *,
        owner: str,
        result: bytes | None,
        ttl_ms: int | None,
        now_ms: int,
    ) -> bool:
        """Record that the effect ``key`` happened: ``done`` with ``result`` (JSON bytes
        or None) until ``now_ms + ttl_ms`` (None: kept until removed). Always records
        (the effect did happen); returns False when ``owner`` no longer held the claim
        (it expired and someone else claimed or finished it), so callers can log it.
        Atomic."""
        ...

    async def once_release(self, queue: str, key: str, *, owner: str) -> bool:
        """Give up ``owner``'s claim on ``key`` (the effect failed) so another attempt
        may claim it at once. A ``done`` record or another owner's claim is left
        alone; returns whether a claim was released. Atomic."""
        ...

    # -- metrics -----------------------------------------------------------------------
    # Issue 6. Workers add counters per (queue, job name, minute); any process reads
    # them back. Values are opaque named integers (``completed``, ``run_h3``...) chosen
    # by the core (shigoto.metrics), so new metrics need no migration. Storage is
    # bounded: minute buckets live 24 h, hour buckets 30 days, older ones are pruned as
    # writes go (a bounded number per call). Beside the buckets, each queue keeps
    # lifetime totals per job name that are never pruned (bounded by job names x
    # fields), so counters exported from them never go down. Worker beats and alert
    # states are opaque bytes encoded by the core, like schedule definitions.

    async def record_metrics(self, samples: Sequence[MetricSample], *, now_ms: int) -> None:
        """Add every sample's values to its minute bucket, to the hour bucket that
        holds that minute (creating them at zero) and to its queue's lifetime totals of
        that job name (see :meth:`read_metric_totals`). Prunes minute buckets older than
        ``MINUTE_RETENTION_MS`` and hour buckets older than ``HOUR_RETENTION_MS`` before
        ``now_ms``; the totals are never pruned. Atomic per queue (a reader never sees
        half a sample, nor a sample in the buckets but not yet in the totals)."""
        ...

    async def read_metric_totals(self, queue: str) -> dict[str, dict[str, int]]:
        """The queue's lifetime totals: job name -> field -> the sum of every value
        :meth:`record_metrics` ever added for it (samples past their buckets' retention
        included). Never pruned, so no value ever decreases — what monotonic counters
        (Prometheus ``*_total``) are built on. Empty for a queue with no samples.
        Read-only."""
        ...

    async def read_metrics(
        self, queue: str, *, resolution: Resolution, since_ms: int, until_ms: int
    ) -> list[MetricBucket]:
        """The queue's buckets of one resolution whose start is in
        ``[since_ms, until_ms)``, sorted by start then job name. Buckets past their
        retention may be missing. Read-only."""
        ...

    async def worker_beat(
        self, worker_id: str, info: bytes, *, expires_ms: int, now_ms: int
    ) -> None:
        """Store a worker's liveness record until ``expires_ms`` (replacing its
        previous one), and forget records that expired before ``now_ms``. Atomic."""
        ...

    async def worker_gone(self, worker_id: str) -> None:
        """Forget a worker's liveness record (clean shutdown)."""
        ...

    async def list_workers(self, *, now_ms: int, limit: int = 1000) -> list[bytes]:
        """The liveness records that have not expired at ``now_ms`` (at most ``limit``,
        sorted by worker id). Read-only."""
        ...

    async def alert_states(self, *, limit: int = 1000) -> list[StoredAlert]:
        """Every stored alert state (sorted by key, at most ``limit``). Read-only."""
        ...

    async def alert_transition(
        self, key: str, state: bytes, *, version: int, note: bytes | None, now_ms: int
    ) -> bool:
        """Compare-and-set one alert's state: when the stored version of ``key`` is
        ``version`` (0: nothing stored), store ``state`` with ``version + 1``, append
        ``note`` (when given) to the transition history (the newest
        ``ALERT_HISTORY`` kept) and return True; otherwise change nothing and return
        False. Atomic: of several evaluators, exactly one wins each transition, and only
        the winner notifies."""
        ...

    async def alert_history(self, *, limit: int = 100) -> list[bytes]:
        """The newest transition notes, newest first (at most ``limit``). Read-only."""
        ...

    async def counts_by_name(self, queue: str, *, limit: int = 10_000) -> NameCounts:
        """Per job name, how many jobs of the queue are ``waiting``, ``delayed``,
        ``active`` and ``dead`` (names and states with no job are absent). Bounded work:
        at most ``limit`` jobs of each state are looked at; when a state holds more,
        ``complete`` is False and its split covers only the first ``limit`` of them
        (:meth:`counts` stays exact)."""
        ...

    # -- audit -------------------------------------------------------------------------
    # Issue 8. An append-only trail of who did what (shigoto.security.audit decides what
    # is recorded). There is no method to change or delete one entry: only
    # ``audit_prune`` removes entries, and only by age (the retention setting).
    # ``replace_payload`` serves key rotation (``shigoto keys rotate``).

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries (at most 1000 per call), each getting a position after every
        entry appended before it. Atomic per call."""
        ...

    async def audit_query(
        self, where: AuditFilter, *, cursor: str | None = None, limit: int = 100
    ) -> AuditPage:
        """One page of entries matching ``where``, newest first. ``cursor`` is the
        previous page's (opaque); a page may hold fewer than ``limit`` items while more
        match (the work of one call is bounded); only ``cursor=None`` means the end.
        Read-only."""
        ...

    async def audit_prune(self, *, before_ms: int, limit: int = 1000) -> int:
        """Delete up to ``limit`` of the oldest entries with ``at_ms < before_ms``
        (retention). Returns how many went. A backend that stores each append call's
        entries together (Redis: one stream item, dated by the server) deletes whole
        calls: up to ``limit`` of them, so possibly more entries."""
        ...

    async def replace_payload(self, queue: str, job_id: str, old: bytes, new: bytes) -> bool:
        """Compare-and-set a job's payload: when the job exists, is not ``active`` and its
        payload is ``old``, store ``new`` and return True; otherwise change nothing and
        return False. Atomic. Used by key rotation only."""
        ...

    # -- batches -----------------------------------------------------------------------
    # Issue 9. A batch is a group of chunk jobs in one queue (ids ``{batch_id}:{index}``)
    # with one optional follow-up job (id ``{batch_id}:follow-up``). The core decides
    # which follow-up runs (shigoto.batches); the backend only keeps the counters and
    # makes "finish the batch and store its follow-up" happen at most once. A batch's
    # data lives with its queue (one Redis Cluster slot). ``definition`` is opaque bytes
    # written by the core.

    async def create_batch(self, batch: BatchRecord) -> None:
        """Store a new, unsealed batch (its counters zero). Atomic."""
        ...

    async def expect_batch_chunks(
        self, queue: str, batch_id: str, first_index: int, count: int
    ) -> None:
        """Register chunks ``first_index .. first_index + count - 1`` as pending; called
        before those chunk jobs are enqueued, so a report can never precede it. Atomic."""
        ...

    async def seal_batch(
        self, queue: str, batch_id: str, *, total_chunks: int, total_items: int, now_ms: int
    ) -> BatchRecord | None:
        """Record that every chunk is enqueued; the batch can finish from now on. Returns
        the batch (None if unknown). Atomic."""
        ...

    async def record_batch_chunks(
        self,
        queue: str,
        batch_id: str,
        chunks: Sequence[tuple[int, JobState]],
        *,
        now_ms: int,
    ) -> BatchRecord | None:
        """Record that these chunks reached a final state. A chunk counts once: a chunk
        not pending (already recorded, or never expected) is ignored. Returns the batch
        after the update (None if unknown). Atomic per call."""
        ...

    async def reconcile_batch(
        self, queue: str, batch_id: str, *, now_ms: int, limit: int = 1000
    ) -> BatchRecord | None:
        """Look at up to ``limit`` pending chunks' jobs and record those already in a
        final state (a worker died between finishing a chunk and reporting it; a chunk
        cancelled or dead-lettered outside a worker). A chunk job no longer stored
        counts as completed (removed by retention). Returns the batch. Atomic per call."""
        ...

    async def pending_batch_chunks(
        self, queue: str, batch_id: str, *, limit: int = 1000
    ) -> list[int]:
        """Indices of up to ``limit`` chunks not yet recorded final. Read-only."""
        ...

    async def finish_batch(
        self,
        queue: str,
        batch_id: str,
        *,
        outcome: str,
        follow_up: NewJob | None,
        now_ms: int,
    ) -> bool:
        """Finish a sealed batch whose chunks are all final, exactly once: in one atomic
        step, when the batch is not finished yet, set ``finished_ms = now_ms``,
        ``outcome`` and ``follow_up_id``, store ``follow_up`` as :meth:`enqueue` would
        and return True. Otherwise (already finished, unsealed, chunks pending, unknown)
        change nothing and return False. This flag, not the follow-up's id, makes the
        follow-up exactly-once (it may be completed and removed already)."""
        ...

    async def get_batch(self, queue: str, batch_id: str) -> BatchRecord | None:
        """One batch, or None. Read-only."""
        ...

    async def list_batches(
        self, queue: str, *, unfinished: bool = False, limit: int = 100
    ) -> list[BatchRecord]:
        """Batches of a queue, newest first (only unfinished ones if asked). Read-only."""
        ...

    async def cancel_batch(self, queue: str, batch_id: str, *, now_ms: int) -> BatchRecord | None:
        """Set the batch's ``cancel_requested`` flag (its chunk jobs are cancelled by the
        core, one :meth:`cancel` each). Returns the batch, None if unknown. Atomic."""
        ...

    # -- job admin ---------------------------------------------------------------------
    # Operator actions on one job (the dashboard's remove / promote, issue 7).

    async def remove(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        """Delete a job in any state but ``active``: its record, payload, history,
        progress and result, and its entry in every index, so :meth:`counts` drops by
        one at once. An ``active`` job is refused (its worker holds the lease; cancel it
        first) and left untouched. Returns True when the job was deleted, False when it
        is active or unknown. A dedup key it held is then treated as held by a removed
        job (see :meth:`enqueue`). Atomic."""
        ...

    async def promote(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        """Make a ``delayed`` job ``waiting`` now: ``ready_ms = now_ms``, so it is
        claimed as if it had become ready at ``now_ms`` (after jobs of its priority that
        were ready earlier), and idle workers are woken. Returns True when it moved,
        False for any other state or an unknown job (nothing changes). Atomic."""
        ...


# -- records of the rate-limit section ---------------------------------------------------

GROUP_SCAN = 1000
"""How many ready jobs a claim with a group rate limit looks at (bounded work)."""
CONCURRENCY_POLL_MS = 50
"""How long a claim held back by ``max_active`` tells idle workers to wait before trying
again: finishing a job does not wake other workers, so they look again this often."""


@runtime_checkable
class ClaimsOnWake(Protocol):
    """Optional: a backend that can claim as part of its blocking wait.

    Waking up and then claiming is two round trips; a backend whose server can run the
    claim the moment the wait ends (Redis: a script pipelined behind ``BZPOPMIN``)
    makes it one, which is most of an idle worker's pickup latency. The worker uses it
    only with the wall clock: such a claim reads the server's time when it runs.
    """

    async def wait_and_claim(
        self,
        queue: str,
        *,
        limit: int,
        worker_id: str,
        lease_ms: int,
        timeout_s: float,
        clock: Callable[[], int],
    ) -> list[Claimed]:
        """:meth:`Backend.wait_for_work` on ``queue``, then :meth:`Backend.claim`, with
        the same guarantees; the claim also runs when the wait times out."""
        ...


@runtime_checkable
class OverlappingEnqueue(Protocol):
    """Optional: a backend whose ``enqueue`` calls may overlap and are still stored in
    the order they were made.

    A bulk add stores chunk after chunk; with one in flight the producer waits while the
    server stores a chunk, and the server waits while the next is encoded. A backend
    that keeps call order across overlapping calls (Redis: one connection, see
    ``backends/redis/lane.py``) lets the producer keep :meth:`enqueue_window` chunks in
    flight, and the add keeps its order (FIFO, and which of two jobs with one dedup key
    is stored).
    """

    def enqueue_window(self) -> int:
        """How many ``enqueue`` calls of one producer may be in flight at once (>= 1)."""
        ...


@runtime_checkable
class LimitOutlook(Protocol):
    """Optional: what this backend's own claims learned about when its queues open.

    A backend composed over this one as its record store (``amqp://…?store=``) wakes
    idle workers on broker deliveries. But a queue held back by its limits must neither
    be woken by those nor wait past its next slot, and jobs parked until a rate-limit
    group's next slot get no delivery at all: only the store's claims know those times.
    """

    def outlook(self, queues: Sequence[str]) -> tuple[list[str], float | None]:
        """``(held, due_in_s)`` for ``queues``, as of this backend's last claims here.

        ``held``: the queues whose last claim was held back by their limits and whose
        next slot has not opened; :meth:`Backend.wait_for_work` on just these sleeps
        until that slot (or until a job of theirs finishes here, under ``max_active``)
        with no server round trip. ``due_in_s``: seconds until the earliest delayed job
        of ``queues`` that this backend knows of is due (None: none known)."""
        ...


class QueueLimits(msgspec.Struct, frozen=True, omit_defaults=True):
    """A queue's rate limits and concurrency cap (all optional; None = no limit).

    A rate is ``*_max`` claims per sliding window of ``*_period_ms``; both or neither
    are set."""

    rate_max: int | None = None
    rate_period_ms: int | None = None
    max_active: int | None = None
    """Active jobs of the queue, across all workers."""
    group_rate_max: int | None = None
    """Per rate-limit group (``NewJob.group``), each group its own window."""
    group_rate_period_ms: int | None = None
    held_until_ms: int | None = None
    """Read-only: set by :meth:`Backend.postpone` with ``hold``, reported by
    :meth:`Backend.get_limits`; ignored by :meth:`Backend.set_limits`."""

    @property
    def is_empty(self) -> bool:
        return self.rate_max is None and self.max_active is None and self.group_rate_max is None


# -- records of the dead-letter and idempotency sections --------------------------------


class DeadFilter(msgspec.Struct, frozen=True):
    """Which dead jobs to list; empty tuples and None match everything.

    Values within one field are alternatives (OR); fields combine with AND.
    """

    names: tuple[str, ...] = ()
    """Job names."""
    reasons: tuple[str, ...] = ()
    """Dead reasons (:class:`~shigoto.job.DeadReason` values, or ``cancelled``)."""
    error_types: tuple[str, ...] = ()
    """Type of the job's last recorded error: the stored name (``myapp.errors.Busy``)
    or its last dotted part (``Busy``)."""
    since_ms: int | None = None
    """Died at or after (``finished_ms >= since_ms``)."""
    until_ms: int | None = None
    """Died before (``finished_ms < until_ms``)."""


class DeadLetter(msgspec.Struct, frozen=True):
    """A dead job as the dead-letter queue shows it: no payload, only its last error
    (read the whole record with :meth:`Backend.get`)."""

    id: str
    queue: str
    name: str
    reason: str | None
    attempts: int
    created_ms: int
    finished_ms: int
    last_error: AttemptError | None


class DeadPage(msgspec.Struct, frozen=True):
    """One page of :meth:`Backend.list_dead`; ``cursor`` None means the end."""

    items: list[DeadLetter]
    cursor: str | None


class OnceClaim(msgspec.Struct, frozen=True):
    """Answer of :meth:`Backend.once_claim`."""

    status: Literal["claimed", "done", "busy"]
    result: bytes | None = None
    """``done``: the result recorded with the effect (JSON bytes), if any."""
    holder: str | None = None
    """``busy``: the owner holding the claim."""
    until_ms: int | None = None
    """``busy``: when that claim expires."""


# -- records of the metrics section -------------------------------------------------------

Resolution = Literal["minute", "hour"]
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
MINUTE_RETENTION_MS = 24 * HOUR_MS
"""Minute buckets are kept 24 hours."""
HOUR_RETENTION_MS = 30 * 24 * HOUR_MS
"""Hour buckets are kept 30 days."""
ALERT_HISTORY = 1000
"""Alert transition notes kept by :meth:`Backend.alert_transition`."""


class NameCounts(msgspec.Struct, frozen=True):
    """:meth:`Backend.counts_by_name`: job name -> state -> count, for the states
    waiting, delayed, active and dead. ``complete`` is False when some state held more
    jobs than the limit, so the split covers only the first ``limit`` of that state."""

    counts: dict[str, dict[JobState, int]]
    complete: bool = True


class MetricSample(msgspec.Struct, frozen=True):
    """Counters of one queue and job name during one minute, to add to storage."""

    queue: str
    name: str
    minute_ms: int
    """Start of the minute (a multiple of ``MINUTE_MS``)."""
    values: dict[str, int]


class MetricBucket(msgspec.Struct, frozen=True):
    """Stored counters of one queue and job name over one minute or one hour."""

    name: str
    start_ms: int
    values: dict[str, int]


class StoredAlert(msgspec.Struct, frozen=True):
    """An alert state as stored: the core's encoded state and its CAS version."""

    key: str
    version: int
    state: bytes


# -- records of the audit section ----------------------------------------------------------

AUDIT_BATCH = 1000
"""The most entries one :meth:`Backend.audit_append` call takes."""


class AuditEntry(msgspec.Struct, frozen=True, gc=False):
    """One audit record: when, who, what, on which queue / job, and details (JSON bytes
    encoded by the core, opaque to backends).

    Not tracked by the garbage collector (``gc=False``; its fields are scalars, so it can
    be in no reference cycle): a busy worker buffers two per job between flushes, and
    tracked they made the collector run about four times as often."""

    at_ms: int
    actor: str
    action: str
    queue: str | None = None
    job_id: str | None = None
    details: bytes | None = None


class AuditFilter(msgspec.Struct, frozen=True):
    """Which audit entries to list; None matches everything; fields combine with AND."""

    job_id: str | None = None
    actor: str | None = None
    action: str | None = None
    queue: str | None = None
    since_ms: int | None = None
    """``at_ms >= since_ms``."""
    until_ms: int | None = None
    """``at_ms < until_ms``."""

    def matches(self, entry: AuditEntry) -> bool:
        return (
            (self.job_id is None or entry.job_id == self.job_id)
            and (self.actor is None or entry.actor == self.actor)
            and (self.action is None or entry.action == self.action)
            and (self.queue is None or entry.queue == self.queue)
            and (self.since_ms is None or entry.at_ms >= self.since_ms)
            and (self.until_ms is None or entry.at_ms < self.until_ms)
        )


class AuditPage(msgspec.Struct, frozen=True):
    """One page of :meth:`Backend.audit_query`; ``cursor`` None means the end."""

    items: list[AuditEntry]
    cursor: str | None


# -- records of the batches section ----------------------------------------------------------


class BatchRecord(msgspec.Struct, frozen=True):
    """A batch as stored. Counters count chunks; ``failed_chunks`` lists the indices of
    chunks that ended ``dead`` or ``cancelled`` (ascending, at most 1000)."""

    id: str
    queue: str
    name: str
    """The chunk jobs' name."""
    created_ms: int
    definition: bytes
    """Follow-up jobs and policy, encoded by the core (opaque to backends)."""
    updated_ms: int = 0
    total_chunks: int | None = None
    """None until the batch is sealed (all chunks enqueued)."""
    total_items: int | None = None
    completed: int = 0
    dead: int = 0
    cancelled: int = 0
    failed_chunks: list[int] = msgspec.field(default_factory=list)
    cancel_requested: bool = False
    finished_ms: int | None = None
    outcome: str | None = None
    follow_up_id: str | None = None

    @property
    def finals(self) -> int:
        return self.completed + self.dead + self.cancelled

    @property
    def all_final(self) -> bool:
        return self.total_chunks is not None and self.finals >= self.total_chunks
