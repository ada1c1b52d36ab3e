"""Schedules on SQLite: tick claims and run-time schedule definitions.

A mixin of :class:`~shigoto.backends.sqlite.backend.SqliteBackend`, kept apart so the
job transitions and the schedule bookkeeping each stay readable. Every write runs in
the backend's single ``BEGIN IMMEDIATE`` transaction helper, so :meth:`claim_tick`
advances the tick state and stores the job atomically: two scheduler processes on one
file serialize on the write lock and exactly one of them sees its upsert apply.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ..contract import NewJob, ScheduleState
from .wakeup import wakeups

T = TypeVar("T")


def _sql(name: str) -> str:
    # Imported late: backend.py imports this module to build SqliteBackend.
    from .backend import SQL

    return SQL[name]


class SchedulesMixin:
    """The ``schedules`` section of the contract for :class:`SqliteBackend`."""

    path: str

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def register_schedules(self, names: Sequence[str], *, now_ms: int) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(
                _sql("schedule_register"), [{"name": name, "now": now_ms} for name in names]
            )

        if names:
            await self._write(tx)

    async def claim_tick(self, schedule: str, fire_ms: int, job: NewJob, *, now_ms: int) -> bool:
        from .backend import _enqueue

        def tx(conn: sqlite3.Connection) -> bool:
            claimed = (
                conn.execute(
                    _sql("schedule_claim_tick"),
                    {
                        "name": schedule,
                        "fire": fire_ms,
                        "queue": job.queue,
                        "job_id": job.id,
                        "now": now_ms,
                    },
                ).rowcount
                == 1
            )
            if claimed:
                _enqueue(conn, jobs=[job], now_ms=now_ms)
            return claimed

        claimed = await self._write(tx)
        if claimed:
            wakeups.notify(self.path)
        return claimed

    async def schedule_states(self, *, limit: int = 1000) -> list[ScheduleState]:
        def read(conn: sqlite3.Connection) -> list[ScheduleState]:
            return [
                ScheduleState(
                    name=row[0],
                    since_ms=row[1],
                    last_fire_ms=row[2],
                    last_queue=row[3],
                    last_job_id=row[4],
                    last_claimed_ms=row[5],
                    definition=row[6],
                )
                for row in conn.execute(_sql("schedule_states"), {"limit": limit})
            ]

        return await self._run(read)

    async def save_schedule(self, name: str, definition: bytes, *, now_ms: int) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                _sql("schedule_save"), {"name": name, "definition": definition, "now": now_ms}
            )

        await self._write(tx)

    async def delete_schedule(self, name: str) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            return conn.execute(_sql("schedule_delete"), {"name": name}).rowcount == 1

        return await self._write(tx)
