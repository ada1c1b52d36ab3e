"""Batches on SQLite: counters per batch, one row per chunk.

A mixin of :class:`~shigoto.backends.sqlite.backend.SqliteBackend`. Every write is one
``BEGIN IMMEDIATE`` transaction, so two workers reporting the last two chunks at the
same instant serialize on the write lock: each chunk row flips from pending exactly once
and :meth:`finish_batch` (flag and follow-up job in one transaction) succeeds once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ...job import JobState
from ..contract import BatchRecord, NewJob
from .wakeup import wakeups

T = TypeVar("T")
_FINAL = {state.value for state in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)}


def _sql(name: str) -> str:
    # Imported late: backend.py imports this module to build SqliteBackend.
    from .backend import SQL

    return SQL[name]


def _load(conn: sqlite3.Connection, queue: str, batch_id: str) -> BatchRecord | None:
    row = conn.execute(_sql("batch_get"), {"queue": queue, "id": batch_id}).fetchone()
    if row is None:
        return None
    failed = [r[0] for r in conn.execute(_sql("batch_failed"), {"queue": queue, "id": batch_id})]
    return BatchRecord(
        id=row[0],
        queue=row[1],
        name=row[2],
        created_ms=row[3],
        definition=row[4],
        updated_ms=row[5],
        total_chunks=row[6],
        total_items=row[7],
        completed=row[8],
        dead=row[9],
        cancelled=row[10],
        failed_chunks=failed,
        cancel_requested=bool(row[11]),
        finished_ms=row[12],
        outcome=row[13],
        follow_up_id=row[14],
    )


def _record(
    conn: sqlite3.Connection, queue: str, batch_id: str, chunks: Sequence[tuple[int, str]], now: int
) -> None:
    counts = {"completed": 0, "dead": 0, "cancelled": 0}
    for idx, state in chunks:
        if state not in counts:
            continue
        changed = conn.execute(
            _sql("batch_record_chunk"),
            {"queue": queue, "id": batch_id, "idx": idx, "state": state},
        ).rowcount
        counts[state] += changed
    if any(counts.values()):
        conn.execute(_sql("batch_count"), {"queue": queue, "id": batch_id, "now": now, **counts})


class SqliteBatches:
    """The ``batches`` section of the contract for :class:`SqliteBackend`."""

    path: str

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def create_batch(self, batch: BatchRecord) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                _sql("batch_create"),
                {
                    "queue": batch.queue,
                    "id": batch.id,
                    "name": batch.name,
                    "created_ms": batch.created_ms,
                    "definition": batch.definition,
                },
            )

        await self._write(tx)

    async def expect_batch_chunks(
        self, queue: str, batch_id: str, first_index: int, count: int
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(
                _sql("batch_expect"),
                ((queue, batch_id, i) for i in range(first_index, first_index + count)),
            )

        await self._write(tx)

    async def seal_batch(
        self, queue: str, batch_id: str, *, total_chunks: int, total_items: int, now_ms: int
    ) -> BatchRecord | None:
        def tx(conn: sqlite3.Connection) -> BatchRecord | None:
            conn.execute(
                _sql("batch_seal"),
                {
                    "queue": queue,
                    "id": batch_id,
                    "total_chunks": total_chunks,
                    "total_items": total_items,
                    "now": now_ms,
                },
            )
            return _load(conn, queue, batch_id)

        return await self._write(tx)

    async def record_batch_chunks(
        self,
        queue: str,
        batch_id: str,
        chunks: Sequence[tuple[int, JobState]],
        *,
        now_ms: int,
    ) -> BatchRecord | None:
        def tx(conn: sqlite3.Connection) -> BatchRecord | None:
            _record(conn, queue, batch_id, [(i, JobState(s).value) for i, s in chunks], now_ms)
            return _load(conn, queue, batch_id)

        return await self._write(tx)

    async def reconcile_batch(
        self, queue: str, batch_id: str, *, now_ms: int, limit: int = 1000
    ) -> BatchRecord | None:
        def tx(conn: sqlite3.Connection) -> BatchRecord | None:
            rows = conn.execute(
                _sql("batch_pending_states"), {"queue": queue, "id": batch_id, "limit": limit}
            ).fetchall()
            finals = [
                (idx, JobState.COMPLETED.value if state is None else state)
                for idx, state in rows
                if state is None or state in _FINAL
            ]
            _record(conn, queue, batch_id, finals, now_ms)
            return _load(conn, queue, batch_id)

        return await self._write(tx)

    async def pending_batch_chunks(
        self, queue: str, batch_id: str, *, limit: int = 1000
    ) -> list[int]:
        def read(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                _sql("batch_pending"), {"queue": queue, "id": batch_id, "limit": limit}
            )
            return [row[0] for row in rows]

        return await self._run(read)

    async def finish_batch(
        self,
        queue: str,
        batch_id: str,
        *,
        outcome: str,
        follow_up: NewJob | None,
        now_ms: int,
    ) -> bool:
        from .backend import _enqueue

        def tx(conn: sqlite3.Connection) -> bool:
            finished = conn.execute(
                _sql("batch_finish"),
                {
                    "queue": queue,
                    "id": batch_id,
                    "now": now_ms,
                    "outcome": outcome,
                    "follow_up_id": None if follow_up is None else follow_up.id,
                },
            ).rowcount
            if finished != 1:
                return False
            if follow_up is not None:
                _enqueue(conn, jobs=[follow_up], now_ms=now_ms)
            return True

        done = await self._write(tx)
        if done and follow_up is not None:
            wakeups.notify(self.path)
        return done

    async def get_batch(self, queue: str, batch_id: str) -> BatchRecord | None:
        return await self._run(lambda conn: _load(conn, queue, batch_id))

    async def list_batches(
        self, queue: str, *, unfinished: bool = False, limit: int = 100
    ) -> list[BatchRecord]:
        def read(conn: sqlite3.Connection) -> list[BatchRecord]:
            ids = conn.execute(
                _sql("batch_list"),
                {"queue": queue, "unfinished": int(unfinished), "limit": limit},
            ).fetchall()
            found = (_load(conn, queue, row[0]) for row in ids)
            return [batch for batch in found if batch is not None]

        return await self._run(read)

    async def cancel_batch(self, queue: str, batch_id: str, *, now_ms: int) -> BatchRecord | None:
        def tx(conn: sqlite3.Connection) -> BatchRecord | None:
            conn.execute(_sql("batch_cancel"), {"queue": queue, "id": batch_id, "now": now_ms})
            return _load(conn, queue, batch_id)

        return await self._write(tx)
