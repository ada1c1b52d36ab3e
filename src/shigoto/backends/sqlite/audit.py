"""The audit trail on SQLite (contract section "audit"), and the payload
compare-and-set that key rotation uses.

A mixin of :class:`~shigoto.backends.sqlite.backend.SqliteBackend`. Entries are rows
of the ``audit`` table, ordered by an autoincrement ``seq`` (never reused, so a
cursor stays valid across prunes). The table has no secondary index, so appends stay
cheap; a query walks ``seq`` ranges newest first, ``SCAN_ROWS`` rows per call.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from msgspec.structs import astuple

from ...errors import ConfigurationError
from ..audit_groups import GroupedEntries
from ..contract import AUDIT_BATCH, AuditEntry, AuditFilter, AuditPage

T = TypeVar("T")
SCAN_ROWS = 50_000
"""The most rows one ``audit_query`` call looks at (the table has no secondary index:
filters are checked while walking ``seq`` downwards, in ranges of this size)."""


def _sql(name: str) -> str:
    from .backend import SQL  # late: backend.py imports this module

    return SQL[name]


class SqliteAudit:
    """The ``audit`` section of the contract for :class:`SqliteBackend`."""

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        if len(entries) > AUDIT_BATCH:
            raise ConfigurationError(f"at most {AUDIT_BATCH} audit entries per call")
        # at_ms, actor, action, queue, job_id, details; groups without an entry each
        rows = (
            [
                (g.at_ms, g.actor, g.action, g.queue, job_id, g.details)
                for g in entries.groups
                for job_id in g.job_ids
            ]
            if isinstance(entries, GroupedEntries)
            else [astuple(e) for e in entries]
        )

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(_sql("audit_append"), rows)

        if rows:
            await self._write(tx)

    async def audit_query(
        self, where: AuditFilter, *, cursor: str | None = None, limit: int = 100
    ) -> AuditPage:
        if not 1 <= limit <= 1000:
            raise ConfigurationError("audit_query limit must be between 1 and 1000")
        try:
            before = None if cursor is None else int(cursor)
        except ValueError:
            raise ConfigurationError(f"bad audit cursor {cursor!r}") from None
        params: dict[str, object] = {
            "job_id": where.job_id,
            "actor": where.actor,
            "action": where.action,
            "queue": where.queue,
            "since": where.since_ms,
            "until": where.until_ms,
            "limit": limit,
        }

        def read(conn: sqlite3.Connection) -> AuditPage:
            low, high = conn.execute(_sql("audit_bounds")).fetchone()
            top = high + 1 if before is None else before
            floor = max(low, top - SCAN_ROWS)
            rows = conn.execute(_sql("audit_query"), {**params, "before": top, "floor": floor})
            found = rows.fetchall()
            items = [AuditEntry(r[1], r[2], r[3], r[4], r[5], r[6]) for r in found]
            if len(found) == limit:
                return AuditPage(items, str(found[-1][0]))
            return AuditPage(items, str(floor) if floor > low else None)

        return await self._run(read)

    async def audit_prune(self, *, before_ms: int, limit: int = 1000) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            return conn.execute(_sql("audit_prune"), {"before": before_ms, "limit": limit}).rowcount

        return await self._write(tx)

    async def replace_payload(self, queue: str, job_id: str, old: bytes, new: bytes) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            params = {"queue": queue, "id": job_id, "old": old, "new": new}
            return conn.execute(_sql("replace_payload"), params).rowcount == 1

        return await self._write(tx)
