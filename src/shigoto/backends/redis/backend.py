"""Redis backend: every transition one Lua script, every queue one hash slot.

Why it is built this way:

* **One script per transition** (``lua/<method>.lua``), run by SHA and re-sent after
  ``NOSCRIPT`` (a restarted or flushed server), so each transition is atomic on the
  server and costs one round trip however many jobs it touches.
* **One hash tag per queue**: every key of queue ``q`` is ``{prefix:q}:<part>``, passed
  in ``KEYS``. A queue is one Redis Cluster slot, so scripts never cross slots, and
  queues spread over the shards of a cluster.
* **Batches**: ``claim`` leases up to ``limit`` jobs and ``complete`` finishes up to
  1,000 in one script call, so throughput is not bound to one round trip per job.
* **Blocking waits** on dedicated connections (:class:`BlockingWaiter`): every
  transition that makes work ready adds a member to the queue's ``marker`` sorted set
  inside its script, and an idle worker blocks in ``BZPOPMIN`` on the markers. A marker
  added between an empty claim and the wait is still there when the wait starts, so no
  wake-up is lost; a claim that leaves jobs behind sets the marker again so the next
  idle worker wakes too. Delayed jobs need no polling: ``claim`` reports the earliest
  due time and the wait ends then at the latest.
* **Time comes in** as ``now_ms``; scripts never call ``TIME``, except a claim sent
  along with a blocking wait (:meth:`RedisBackend.wait_and_claim`): it runs when the
  wait ends, so it reads Redis' clock (used with the wall clock only).

Exact priority order, proved: the ``wait`` index is a sorted set whose score is
``-priority``. Priorities are integers in [-2^31, 2^31 - 1]; every integer of magnitude
below 2^53 is a double exactly, so scores compare exactly. Ties (same priority) are
ordered by Redis by the member's bytes, and the member is ``ready_ms`` and ``seq``
written as two zero-padded 15-digit decimals, then the id. For non-negative integers
below 10^15 (year 33658 in ms; 10^15 enqueues per queue), fixed-width decimal byte
order equals numeric order, and the pair is compared field by field — so claims follow
(priority desc, ready_ms asc, seq asc) exactly, with nothing packed into a mantissa.
The final-state indexes (completed, dead, cancelled) use the same device with score 0
and ``finished_ms`` in place of ``ready_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from redis.asyncio import RedisCluster
from redis.exceptions import RedisError, ResponseError

from ...errors import ShigotoError
from ...job import AttemptError, JobRecord, JobState
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
from .audit import RedisAudit
from .batches import RedisBatches
from .connection import NO_SCRIPT, BlockingWaiter, unavailable
from .dead_letters import RedisDeadLetters
from .idempotency import RedisIdempotency
from .job_admin import RedisJobAdmin
from .lane import OrderedLane
from .metrics import RedisMetrics
from .plumbing import MAX_BATCH, SCRIPTS, by_queue, chunks
from .rate_limits import RedisRateLimits
from .records import (
    QueueKeys,
    decode_record,
    decode_state,
    encode_json,
    enqueued,
    job_values,
    queue_keys,
    state_of,
)
from .schedules import RedisSchedules
from .scripts import check

ENQUEUE_WINDOW = 3
"""Enqueue calls one producer may keep in flight on standalone Redis: the next chunks of
a bulk add travel while Redis stores the one before. Measured on 2 cores with 100,000
jobs (`bench/throughput.py`): 1 in flight 81 – 85k jobs/s, 2: 89 – 92k, 3: 117k, 4: no
more (the producer's CPU is then the limit)."""

_STATE_ORDER = (
    JobState.WAITING,
    JobState.DELAYED,
    JobState.ACTIVE,
    JobState.COMPLETED,
    JobState.DEAD,
    JobState.CANCELLED,
)


class RedisBackend(
    RedisSchedules,
    RedisDeadLetters,
    RedisIdempotency,
    RedisMetrics,
    RedisAudit,
    RedisBatches,
    RedisJobAdmin,
    RedisRateLimits,
):
    """The Redis backend. See :mod:`shigoto.backends.redis.settings` for URL forms."""

    capabilities = Capabilities(name="redis", multi_host=True, blocking_wait=True, rate_limits=True)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._waiter = BlockingWaiter(self.settings)
        self._claims = OrderedLane(
            self.settings, scripts=(SCRIPTS["claim"].body, SCRIPTS["complete"].body)
        )
        """Where a worker's claims and completions go on standalone Redis (two calls per
        batch of jobs; see :meth:`_run_ordered`), apart from enqueues: a claim does not
        wait behind the chunks of a bulk add that a handler makes."""
        self._in_line = asyncio.Lock()
        """Held by an enqueue call from its start until it has sent its last chunk."""
        self._due_at: dict[str, float] = {}
        self._held_at: dict[str, float] = {}
        """Queue -> loop time its next slot opens, when a limit held a claim back."""
        self._capped: set[str] = set()
        """Queues held by max_active alone: a job of theirs finishing here wakes waits."""
        self._freed = asyncio.Event()

    async def close(self) -> None:
        await self._waiter.close()
        await self._claims.close()
        await super().close()

    # -- producing ---------------------------------------------------------------------

    def enqueue_window(self) -> int:
        """``ENQUEUE_WINDOW`` calls in flight on standalone Redis (see :mod:`.lane`); one
        on a cluster, whose client spreads commands over connections per node."""
        return 1 if self._cluster else ENQUEUE_WINDOW

    async def enqueue(self, jobs: Sequence[NewJob], now_ms: int) -> list[Enqueued]:
        # Get in line first, before anything that may wait (connecting, registering a
        # queue), and leave once the last chunk is sent: overlapping calls then reach
        # the lane in the order they were made (see enqueue_window).
        await self._in_line.acquire()
        waiting_in_line = True

        def leave_line() -> None:
            nonlocal waiting_in_line
            if waiting_in_line:
                waiting_in_line = False
                self._in_line.release()

        try:
            if self._client is None:
                await self._client_ready()  # a cluster is known once connected
            lane = None if self._cluster else self._lane
            if lane is None:
                leave_line()  # a cluster takes one call at a time (enqueue_window)
            work = [
                (queue, chunk)
                for queue, indexes in by_queue([job.queue for job in jobs]).items()
                for chunk in chunks(indexes)
            ]
            out: list[Enqueued | None] = [None] * len(jobs)
            for n, (queue, chunk) in enumerate(work):
                await self._register(queue)
                script_keys = queue_keys(self.prefix, queue).for_store
                dedup = any(jobs[i].dedup_key is not None for i in chunk)
                args: list[Any] = [now_ms, 7 if dedup else 5]
                for i in chunk:
                    args += job_values(jobs[i], now_ms, dedup=dedup)
                if lane is None:
                    reply = await self._run("enqueue", script_keys, args)
                else:
                    sent = leave_line if n == len(work) - 1 else None
                    reply = await self._run_on_lane(lane, "enqueue", script_keys, args, sent)
                for i, done in zip(chunk, enqueued(reply, [jobs[i] for i in chunk]), strict=True):
                    out[i] = done
        finally:
            leave_line()
        return [item for item in out if item is not None]

    # -- consuming ---------------------------------------------------------------------

    async def claim(
        self, queue: str, *, limit: int, worker_id: str, lease_ms: int, now_ms: int
    ) -> list[Claimed]:
        if limit <= 0:
            return []
        keys = queue_keys(self.prefix, queue)
        args = (now_ms, min(limit, MAX_BATCH), worker_id, now_ms + lease_ms, os.urandom(6).hex())
        reply = await self._run_ordered(self._claims, "claim", _claim_keys(keys), args)
        return await self._claimed(queue, reply, worker_id, now_ms)

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
        """Wait for work in ``queue`` and claim behind the wait in one round trip.

        The claim is sent with the blocking wait and runs on the server the moment
        the wait ends (see :meth:`BlockingWaiter.wait_then_eval`), so it reads the
        time from Redis' clock: only for callers whose ``clock`` is the wall clock.
        On a cluster, or for a queue held by its limits, it is :meth:`wait_for_work`
        then :meth:`claim`, as before.
        """
        if limit <= 0:
            return []
        client = self._client or await self._client_ready()
        loop_now = asyncio.get_running_loop().time()
        due_at = self._due_at.get(queue)
        timeout = timeout_s if due_at is None else min(timeout_s, due_at - loop_now)
        if (
            isinstance(client, RedisCluster)
            or queue in self._held_at
            or queue in self._capped
            or timeout <= 0
        ):
            await self.wait_for_work([queue], timeout_s)
            return await self.claim(
                queue, limit=limit, worker_id=worker_id, lease_ms=lease_ms, now_ms=clock()
            )
        keys = queue_keys(self.prefix, queue)
        args = (0, min(limit, MAX_BATCH), worker_id, 0, os.urandom(6).hex(), lease_ms)
        script = SCRIPTS["claim"]
        try:
            with self._waking(timeout if timeout < timeout_s else None, keys.marker):
                reply = await self._waiter.wait_then_eval(
                    [keys.marker], timeout, script.sha, _claim_keys(keys), args
                )
        except ResponseError as exc:
            raise ShigotoError(f"Redis script claim failed: {exc}") from exc
        if reply is NO_SCRIPT:  # a restarted server: the usual path re-sends the script
            return await self.claim(
                queue, limit=limit, worker_id=worker_id, lease_ms=lease_ms, now_ms=clock()
            )
        return await self._claimed(queue, check(script, reply), worker_id, clock())

    async def _claimed(
        self, queue: str, reply: list[Any], worker_id: str, now_ms: int
    ) -> list[Claimed]:
        """The jobs of a claim script's reply; remembers what it says about waiting."""
        next_due, hold_until, capped = reply[0], reply[1], reply[2]
        loop_now = asyncio.get_running_loop().time()
        if next_due >= 0:
            # remembered as a monotonic deadline: wait_for_work sleeps no longer than this
            delay_s = (next_due - now_ms) / 1000
            self._due_at[queue] = loop_now + delay_s + 0.001
        else:
            self._due_at.pop(queue, None)
        if hold_until >= 0:
            # the limits are used up: idle workers sleep until the next slot
            self._held_at[queue] = loop_now + max(0, hold_until - now_ms) / 1000 + 0.001
        else:
            self._held_at.pop(queue, None)
        if capped:
            self._capped.add(queue)
            self._freed.clear()  # set again by a job of ours finishing (_slot_freed)
        else:
            self._capped.discard(queue)
        claimed = []
        for n in range(3, len(reply), 5):
            try:
                record, token = decode_record(
                    queue, reply[n], reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4], None
                )
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError) as exc:
                # A damaged record must not fail the claim of the healthy jobs around it
                # (nor come back every lease): dead at once. Its state decoded in Lua,
                # so the token is known.
                job_id = reply[n].decode() if isinstance(reply[n], bytes) else str(reply[n])
                state = decode_state(reply[n + 1])
                assert state.t is not None
                error = AttemptError(
                    attempt=state.a,
                    error_type="CorruptRecord",
                    message=f"the stored job record could not be decoded: {exc}"[:2000],
                    traceback="",
                    worker_id=worker_id,
                    started_ms=now_ms,
                    ended_ms=now_ms,
                )
                lease = Lease(queue, job_id, state.t)
                await self.dead_letter(lease, reason="corrupt_record", error=error, now_ms=now_ms)
                continue
            assert token is not None
            claimed.append(Claimed(record=record, token=token))
        return claimed

    async def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> None:
        if timeout_s <= 0 or not queues:
            return
        client = self._client or await self._client_ready()
        now = asyncio.get_running_loop().time()
        timeout = timeout_s
        for queue in queues:
            due_at = self._due_at.get(queue)
            if due_at is not None:
                timeout = min(timeout, due_at - now)
        # A queue held by its limits is not waited on (its marker would wake us for
        # nothing) but looked at again when its next slot opens.
        open_queues = []
        for queue in queues:
            held_at = self._held_at.get(queue)
            if held_at is not None and held_at > now:
                timeout = min(timeout, held_at - now)
            else:
                open_queues.append(queue)
        if timeout <= 0:
            return
        if not open_queues:
            if self._capped.intersection(queues):
                # held by max_active: a job finishing in this process frees a slot now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), timeout)
            else:
                await asyncio.sleep(timeout)
            return
        groups: dict[tuple[str, int] | None, list[bytes]] = {}
        for queue in open_queues:
            marker = queue_keys(self.prefix, queue).marker
            node = None
            if isinstance(client, RedisCluster):  # one blocking wait per node
                try:
                    owner = client.get_node_from_key(marker.decode())
                except RedisError as exc:  # slot map incomplete: the cluster is failing over
                    raise unavailable(self.settings, exc) from exc
                node = None if owner is None else (owner.host, int(owner.port))
            groups.setdefault(node, []).append(marker)
        # one marker is enough to wake the wait: it ends when any of its commands does
        with self._waking(timeout if timeout < timeout_s else None, next(iter(groups.values()))[0]):
            await self._waiter.wait(groups, timeout)

    async def extend(
        self, leases: Sequence[Lease], *, lease_ms: int, now_ms: int
    ) -> list[LeaseStatus]:
        out: list[LeaseStatus | None] = [None] * len(leases)
        for queue, indexes in by_queue([lease.queue for lease in leases]).items():
            keys = queue_keys(self.prefix, queue)
            for chunk in chunks(indexes):
                args: list[Any] = [now_ms + lease_ms]
                for i in chunk:
                    args += (leases[i].job_id, leases[i].token)
                reply = await self._run("extend", (keys.active, keys.jobs), args)
                for i, code in zip(chunk, reply, strict=True):
                    out[i] = LeaseStatus(
                        leases[i].job_id, held=code > 0, cancel_requested=code == 2
                    )
        return [status for status in out if status is not None]

    async def update_progress(self, lease: Lease, progress: bytes) -> None:
        keys = queue_keys(self.prefix, lease.queue)
        await self._run(
            "update_progress",
            (keys.jobs, keys.progress),
            (lease.job_id, lease.token, progress),
            job_id=lease.job_id,
        )

    async def complete(self, items: Sequence[Completion], now_ms: int) -> list[bool]:
        out = [False] * len(items)
        for queue, indexes in by_queue([item.lease.queue for item in items]).items():
            keys = queue_keys(self.prefix, queue)
            script_keys = (
                keys.active,
                keys.completed,
                keys.jobs,
                keys.data,
                keys.errors,
                keys.progress,
                keys.result,
            )
            for chunk in chunks(indexes):
                args: list[Any] = [now_ms]
                for i in chunk:
                    lease = items[i].lease
                    args += (lease.job_id, lease.token, items[i].result or b"")
                reply = await self._run_ordered(self._claims, "complete", script_keys, args)
                for i, code in zip(chunk, reply, strict=True):
                    out[i] = code == 1
            if self._capped:
                self._slot_freed(queue)
        return out

    async def retry(
        self, lease: Lease, *, run_at_ms: int, error: AttemptError, now_ms: int
    ) -> None:
        keys = queue_keys(self.prefix, lease.queue)
        await self._run(
            "retry",
            (
                keys.wait,
                keys.delayed,
                keys.active,
                keys.jobs,
                keys.errors,
                keys.marker,
                keys.cancelled,
            ),
            (lease.job_id, lease.token, run_at_ms, now_ms, encode_json(error)),
            job_id=lease.job_id,
        )
        self._slot_freed(lease.queue)

    async def dead_letter(
        self, lease: Lease, *, reason: str, error: AttemptError | None, now_ms: int
    ) -> None:
        keys = queue_keys(self.prefix, lease.queue)
        await self._run(
            "dead_letter",
            (
                keys.active,
                keys.dead,
                keys.jobs,
                keys.data,
                keys.errors,
                keys.progress,
                keys.result,
            ),
            (
                lease.job_id,
                lease.token,
                reason,
                now_ms,
                b"" if error is None else encode_json(error),
            ),
            job_id=lease.job_id,
        )
        self._slot_freed(lease.queue)

    async def release(
        self, leases: Sequence[Lease], *, now_ms: int, note: AttemptError | None = None
    ) -> list[bool]:
        encoded = b"" if note is None else encode_json(note)
        out = [False] * len(leases)
        for queue, indexes in by_queue([lease.queue for lease in leases]).items():
            keys = queue_keys(self.prefix, queue)
            script_keys = (
                keys.wait,
                keys.active,
                keys.jobs,
                keys.errors,
                keys.marker,
                keys.cancelled,
            )
            for chunk in chunks(indexes):
                args: list[Any] = [now_ms, encoded]
                for i in chunk:
                    args += (leases[i].job_id, leases[i].token)
                reply = await self._run("release", script_keys, args)
                for i, code in zip(chunk, reply, strict=True):
                    out[i] = code == 1
        return out

    # -- housekeeping ------------------------------------------------------------------

    async def promote_due(self, queue: str, *, now_ms: int, limit: int) -> int:
        keys = queue_keys(self.prefix, queue)

        async def one_round(size: int) -> list[None]:
            moved = await self._run(
                "promote_due", (keys.delayed, keys.wait, keys.jobs, keys.marker), (now_ms, size)
            )
            return [None] * int(moved)

        return len(await _in_rounds(limit, one_round))

    async def recover_stalled(self, queue: str, *, now_ms: int, limit: int) -> list[Recovered]:
        keys = queue_keys(self.prefix, queue)
        script_keys = (keys.wait, keys.active, keys.dead, keys.jobs, keys.errors, keys.marker)

        async def one_round(size: int) -> list[Recovered]:
            reply = await self._run("recover_stalled", script_keys, (now_ms, size))
            return [
                Recovered(job_id=reply[n].decode(), state=state_of(reply[n + 1]))
                for n in range(0, len(reply), 2)
            ]

        return await _in_rounds(limit, one_round)

    # -- reading -----------------------------------------------------------------------

    async def get(self, queue: str, job_id: str) -> JobRecord | None:
        keys = queue_keys(self.prefix, queue)
        reply = await self._run(
            "get", (keys.jobs, keys.data, keys.errors, keys.progress, keys.result), (job_id,)
        )
        return None if reply is None else decode_record(queue, job_id, *reply)[0]

    async def counts(self, queue: str) -> dict[JobState, int]:
        keys = queue_keys(self.prefix, queue)
        reply = await self._run("counts", tuple(keys.index[s] for s in _STATE_ORDER), ())
        counts = dict.fromkeys(JobState, 0)
        counts.update(zip(_STATE_ORDER, (int(n) for n in reply), strict=True))
        return counts

    async def queues(self) -> list[str]:
        members = await self._call("SMEMBERS", self.globals.queues)
        return sorted(member.decode() for member in members)

    async def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobRecord]:
        keys = queue_keys(self.prefix, queue)
        script_keys = (
            keys.index[state],
            keys.jobs,
            keys.data,
            keys.errors,
            keys.progress,
            keys.result,
        )
        records: list[JobRecord] = []

        async def one_round(size: int) -> list[JobRecord]:
            start = offset + len(records)
            reply = await self._run("list_jobs", script_keys, (state.value, start, size))
            page = [decode_record(queue, *reply[n : n + 6])[0] for n in range(0, len(reply), 6)]
            records.extend(page)
            return page

        await _in_rounds(limit, one_round)
        return records

    # -- administering -----------------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, *, now_ms: int) -> JobState | None:
        keys = queue_keys(self.prefix, queue)
        reply = await self._run(
            "cancel", (keys.wait, keys.delayed, keys.cancelled, keys.jobs), (job_id, now_ms)
        )
        return None if reply is None else state_of(reply)

    async def set_paused(self, queue: str, paused: bool) -> None:
        keys = queue_keys(self.prefix, queue)
        await self._register(queue)
        await self._run("set_paused", (keys.meta, keys.marker), ("1" if paused else "0",))

    async def is_paused(self, queue: str) -> bool:
        paused = await self._call("HGET", queue_keys(self.prefix, queue).meta, "paused")
        return bool(paused == b"1")

    async def redrive(
        self,
        queue: str,
        job_ids: Sequence[str],
        *,
        now_ms: int,
        run_at_ms: int | None = None,
        note: AttemptError | None = None,
    ) -> list[str]:
        keys = queue_keys(self.prefix, queue)
        script_keys = (
            keys.wait,
            keys.delayed,
            keys.dead,
            keys.jobs,
            keys.errors,
            keys.progress,
            keys.result,
            keys.marker,
        )
        head = (now_ms, run_at_ms or now_ms, b"" if note is None else encode_json(note))
        moved: list[str] = []
        for chunk in chunks(job_ids):
            reply = await self._run("redrive", script_keys, (*head, *chunk))
            moved.extend(member.decode() for member in reply)
        return moved


async def _in_rounds(limit: int, one_round: Callable[[int], Awaitable[list[Any]]]) -> list[Any]:
    """Call ``one_round(n)`` with n <= MAX_BATCH until ``limit`` items or a short round."""
    results: list[Any] = []
    while len(results) < limit:
        size = min(MAX_BATCH, limit - len(results))
        batch = await one_round(size)
        results.extend(batch)
        if len(batch) < size:
            break
    return results


def _claim_keys(keys: QueueKeys) -> tuple[bytes, ...]:
    return (
        keys.meta,
        keys.wait,
        keys.delayed,
        keys.active,
        keys.jobs,
        keys.data,
        keys.errors,
        keys.progress,
        keys.marker,
        keys.limits,
        keys.rate,
        keys.grate,
        keys.grate_exp,
    )
