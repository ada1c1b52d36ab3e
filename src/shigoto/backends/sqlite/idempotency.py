"""The idempotency section of the contract on SQLite (queries in ``idempotency.sql``).

* **Dedup keys** (``NewJob.dedup_key``) live in ``dedup_keys``; :func:`dedup_holder` and
  :func:`take_dedup_key` run inside the enqueue transaction (``BEGIN IMMEDIATE``), so
  check-and-claim is atomic across threads and processes.
* **Once-records** (``ctx.once``) live in ``once_records``; each call is one
  transaction, and reaps a bounded number of expired rows as it goes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ...job import JobState
from ..contract import Enqueued, NewJob, OnceClaim

T = TypeVar("T")
REAP_LIMIT = 20
"""Expired rows removed per call: keeps tables bounded without a sweeper task."""
RECHECK_MS = 60_000
"""A reaped dedup key whose job is still live is looked at again this much later."""
LIVE_STATES = frozenset({JobState.WAITING.value, JobState.DELAYED.value, JobState.ACTIVE.value})


class SqliteIdempotency:
    """Mixin of :class:`~shigoto.backends.sqlite.SqliteBackend`."""

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def once_claim(
        self, queue: str, key: str, *, owner: str, lease_ms: int, now_ms: int
    ) -> OnceClaim:
        from .backend import SQL

        def tx(conn: sqlite3.Connection) -> OnceClaim:
            conn.execute(SQL["once_reap"], {"now": now_ms, "limit": REAP_LIMIT})
            row = conn.execute(SQL["once_get"], {"queue": queue, "key": key}).fetchone()
            if row is not None:
                holder, claimed_until, done_ms, result, expires = row
                if done_ms is not None and (expires is None or expires > now_ms):
                    return OnceClaim("done", result=result)
                if (
                    done_ms is None
                    and holder != owner
                    and claimed_until is not None
                    and claimed_until > now_ms
                ):
                    return OnceClaim("busy", holder=holder, until_ms=claimed_until)
            conn.execute(
                SQL["once_claim"],
                {"queue": queue, "key": key, "owner": owner, "until": now_ms + lease_ms},
            )
            return OnceClaim("claimed")

        return await self._write(tx)

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
        from .backend import SQL

        def tx(conn: sqlite3.Connection) -> bool:
            row = conn.execute(SQL["once_get"], {"queue": queue, "key": key}).fetchone()
            held = row is not None and row[0] == owner and row[2] is None
            conn.execute(
                SQL["once_mark"],
                {
                    "queue": queue,
                    "key": key,
                    "owner": owner,
                    "now": now_ms,
                    "result": result,
                    "expires": None if ttl_ms is None else now_ms + ttl_ms,
                },
            )
            return held

        return await self._write(tx)

    async def once_release(self, queue: str, key: str, *, owner: str) -> bool:
        from .backend import SQL

        def tx(conn: sqlite3.Connection) -> bool:
            params = {"queue": queue, "key": key, "owner": owner}
            return conn.execute(SQL["once_release"], params).rowcount == 1

        return await self._write(tx)


# -- dedup keys, called by the enqueue transaction ---------------------------------------


def dedup_holder(conn: sqlite3.Connection, job: NewJob, now_ms: int) -> Enqueued | None:
    """The job that holds ``job.dedup_key`` right now, or None when the key is free."""
    from .backend import SQL

    row = conn.execute(SQL["once_dedup_get"], {"queue": job.queue, "key": job.dedup_key}).fetchone()
    if row is None:
        return None
    holder_id, held_until_ms, state = row
    if state in LIVE_STATES or now_ms < held_until_ms:
        # a holder already removed by its retention policy can only have finished
        return Enqueued(
            id=holder_id, created=False, state=JobState(state or JobState.COMPLETED.value)
        )
    return None


def take_dedup_key(conn: sqlite3.Connection, job: NewJob, now_ms: int) -> None:
    """Make the just-stored ``job`` the holder of its dedup key; reap a few stale keys."""
    from .backend import SQL

    for queue, key, state in conn.execute(
        SQL["once_dedup_stale"], {"now": now_ms, "limit": REAP_LIMIT}
    ).fetchall():
        params = {"queue": queue, "key": key, "later": now_ms + RECHECK_MS}
        if state in LIVE_STATES:
            conn.execute(SQL["once_dedup_recheck_later"], params)
        else:
            conn.execute(SQL["once_dedup_forget"], params)
    conn.execute(
        SQL["once_dedup_take"],
        {
            "queue": job.queue,
            "key": job.dedup_key,
            "job_id": job.id,
            "held_until": job.created_ms + (job.dedup_ttl_ms or 0),
        },
    )
