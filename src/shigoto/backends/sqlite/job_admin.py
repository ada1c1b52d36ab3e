"""Operator actions on one job on SQLite: remove and promote (issue 7).

A mixin of :class:`~shigoto.backends.sqlite.backend.SqliteBackend`. Each action is one
statement in the backend's ``BEGIN IMMEDIATE`` transaction helper, guarded by the
job's state in its ``WHERE``, so a concurrent claim either happens before (the job is
active and the action is refused) or after (the action already applied).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .wakeup import wakeups

T = TypeVar("T")


def _sql(name: str) -> str:
    # Imported late: backend.py imports this module to build SqliteBackend.
    from .backend import SQL

    return SQL[name]


class JobAdminMixin:
    """The ``job admin`` section of the contract for :class:`SqliteBackend`."""

    path: str

    if TYPE_CHECKING:

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def remove(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            return conn.execute(_sql("admin_remove"), {"queue": queue, "id": job_id}).rowcount == 1

        return await self._write(tx)

    async def promote(self, queue: str, job_id: str, *, now_ms: int) -> bool:

        def tx(conn: sqlite3.Connection) -> bool:
            params = {"queue": queue, "id": job_id, "now": now_ms}
            return conn.execute(_sql("admin_promote"), params).rowcount == 1

        moved = await self._write(tx)
        if moved:
            wakeups.notify(self.path)
        return moved
