"""The dead-letter section of the contract on SQLite (queries in ``dead_letters.sql``).

Dead jobs are rows of ``jobs`` in state ``dead``; pages are read newest death first
through the ``(queue, state, finished_ms)`` index with a keyset cursor
``"<finished_ms>:<seq>"``, so a page costs O(log n + limit) however deep it is.
Filters on name, reason and time use columns; the error-type filter reads the last
element of the job's JSON error history.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ...errors import ConfigurationError
from ...job import AttemptError
from ..contract import DeadFilter, DeadLetter, DeadPage

T = TypeVar("T")
MAX_PAGE = 1000

_error_decoder = msgspec.json.Decoder(AttemptError)
_encoder = msgspec.json.Encoder()


class SqliteDeadLetters:
    """Mixin of :class:`~shigoto.backends.sqlite.SqliteBackend`."""

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def list_dead(
        self, queue: str, where: DeadFilter, *, cursor: str | None = None, limit: int = 100
    ) -> DeadPage:
        from .backend import SQL

        if not 1 <= limit <= MAX_PAGE:
            raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        cursor_ms, cursor_seq = _parse_cursor(cursor)
        params: dict[str, Any] = {
            "queue": queue,
            "cursor_ms": cursor_ms,
            "cursor_seq": cursor_seq,
            "since_ms": where.since_ms,
            "until_ms": where.until_ms,
            "names": _json_list(where.names),
            "reasons": _json_list(where.reasons),
            "error_types": _json_list(where.error_types),
            "limit": limit,
        }

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(SQL["dlq_list"], params).fetchall()

        rows = await self._run(read)
        items = [
            DeadLetter(
                id=row[0],
                queue=row[1],
                name=row[2],
                reason=row[3],
                attempts=row[4],
                created_ms=row[5],
                finished_ms=row[6] if row[6] is not None else row[5],
                last_error=None if row[8] is None else _error_decoder.decode(row[8]),
            )
            for row in rows
        ]
        next_cursor = f"{rows[-1][6]}:{rows[-1][7]}" if len(rows) == limit else None
        return DeadPage(items=items, cursor=next_cursor)

    async def purge_dead(self, queue: str, job_ids: Sequence[str]) -> list[str]:
        from .backend import SQL

        def tx(conn: sqlite3.Connection) -> list[str]:
            return [
                job_id
                for job_id in job_ids
                if conn.execute(SQL["dlq_purge"], {"queue": queue, "id": job_id}).rowcount
            ]

        return await self._write(tx) if job_ids else []


def _json_list(values: tuple[str, ...]) -> str | None:
    # text, not bytes: SQLite's JSON functions refuse BLOB arguments
    return _encoder.encode(list(values)).decode() if values else None


def _parse_cursor(cursor: str | None) -> tuple[int | None, int | None]:
    if cursor is None:
        return None, None
    try:
        finished, seq = cursor.split(":")
        return int(finished), int(seq)
    except ValueError:
        raise ConfigurationError(f"not a dead-letter cursor of this backend: {cursor!r}") from None
