"""Metrics, worker liveness and alert states on SQLite.

A mixin of :class:`~shigoto.backends.sqlite.backend.SqliteBackend`. One row holds one
bucket's counters (a JSON object of named integers) so a flush of one worker is a
handful of row merges inside one ``BEGIN IMMEDIATE`` transaction: concurrent workers
serialize on the write lock and no increment is lost. Old buckets are pruned in the
same transaction, a bounded number per call, so storage stays bounded. The lifetime
totals (``metric_totals``: one row per queue and job name, its counters as one JSON
object, like a bucket) are merged in the same transaction and never pruned.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import msgspec

from ...job import JobState
from ..contract import (
    ALERT_HISTORY,
    HOUR_MS,
    HOUR_RETENTION_MS,
    MINUTE_MS,
    MINUTE_RETENTION_MS,
    MetricBucket,
    MetricSample,
    NameCounts,
    Resolution,
    StoredAlert,
)

T = TypeVar("T")

PRUNE_LIMIT = 500
WIDTH_MS: dict[str, int] = {"minute": MINUTE_MS, "hour": HOUR_MS}
_values = msgspec.json.Decoder(dict[str, int])
_encode = msgspec.json.encode
NAME_STATES = (JobState.WAITING, JobState.DELAYED, JobState.ACTIVE, JobState.DEAD)
"""The states :meth:`SqliteMetrics.counts_by_name` counts per job name."""


def _sql(name: str) -> str:
    from .backend import SQL

    return SQL[name]


class SqliteMetrics:
    """The ``metrics`` section of the contract for :class:`SqliteBackend`."""

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def record_metrics(self, samples: Sequence[MetricSample], *, now_ms: int) -> None:
        # Merge samples that land in the same bucket first: one row write each.
        merged: dict[tuple[str, int, int, str], dict[str, int]] = {}
        for sample in samples:
            for width in (MINUTE_MS, HOUR_MS):
                key = (
                    sample.queue,
                    width,
                    sample.minute_ms - sample.minute_ms % width,
                    sample.name,
                )
                into = merged.setdefault(key, {})
                for field, value in sample.values.items():
                    into[field] = into.get(field, 0) + value
        if not merged:
            return
        queues = {sample.queue for sample in samples}
        totals: dict[tuple[str, str], dict[str, int]] = {}
        for sample in samples:
            into = totals.setdefault((sample.queue, sample.name), {})
            for field, value in sample.values.items():
                into[field] = into.get(field, 0) + value

        def tx(conn: sqlite3.Connection) -> None:
            for (queue, width, start, name), values in merged.items():
                params = {"queue": queue, "resolution": width, "start": start, "name": name}
                row = conn.execute(_sql("metrics_get_bucket"), params).fetchone()
                if row is not None:
                    for field, value in _values.decode(row[0]).items():
                        values[field] = values.get(field, 0) + value
                conn.execute(_sql("metrics_put_bucket"), {**params, "vals": _encode(values)})
            for (queue, name), values in totals.items():
                params = {"queue": queue, "name": name}
                row = conn.execute(_sql("metrics_get_total"), params).fetchone()
                if row is not None:
                    for field, value in _values.decode(row[0]).items():
                        values[field] = values.get(field, 0) + value
                conn.execute(_sql("metrics_put_total"), {**params, "vals": _encode(values)})
            for queue in queues:
                for width, keep in ((MINUTE_MS, MINUTE_RETENTION_MS), (HOUR_MS, HOUR_RETENTION_MS)):
                    conn.execute(
                        _sql("metrics_prune"),
                        {
                            "queue": queue,
                            "resolution": width,
                            "before": now_ms - keep,
                            "limit": PRUNE_LIMIT,
                        },
                    )

        await self._write(tx)

    async def read_metrics(
        self, queue: str, *, resolution: Resolution, since_ms: int, until_ms: int
    ) -> list[MetricBucket]:
        params = {
            "queue": queue,
            "resolution": WIDTH_MS[resolution],
            "since": since_ms,
            "until": until_ms,
        }

        def read(conn: sqlite3.Connection) -> list[MetricBucket]:
            return [
                MetricBucket(name=row[0], start_ms=row[1], values=_values.decode(row[2]))
                for row in conn.execute(_sql("metrics_read"), params)
            ]

        return await self._run(read)

    async def read_metric_totals(self, queue: str) -> dict[str, dict[str, int]]:
        def read(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            rows = conn.execute(_sql("metrics_read_totals"), {"queue": queue})
            return {name: _values.decode(vals) for name, vals in rows}

        return await self._run(read)

    async def worker_beat(
        self, worker_id: str, info: bytes, *, expires_ms: int, now_ms: int
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(_sql("metrics_worker_expire"), {"now": now_ms, "limit": PRUNE_LIMIT})
            conn.execute(
                _sql("metrics_worker_beat"), {"id": worker_id, "info": info, "expires": expires_ms}
            )

        await self._write(tx)

    async def worker_gone(self, worker_id: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(_sql("metrics_worker_gone"), {"id": worker_id})

        await self._write(tx)

    async def list_workers(self, *, now_ms: int, limit: int = 1000) -> list[bytes]:
        def read(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(_sql("metrics_list_workers"), {"now": now_ms, "limit": limit})
            return [bytes(row[0]) for row in rows]

        return await self._run(read)

    async def alert_states(self, *, limit: int = 1000) -> list[StoredAlert]:
        def read(conn: sqlite3.Connection) -> list[StoredAlert]:
            return [
                StoredAlert(key=row[0], version=row[1], state=bytes(row[2]))
                for row in conn.execute(_sql("metrics_alert_states"), {"limit": limit})
            ]

        return await self._run(read)

    async def alert_transition(
        self, key: str, state: bytes, *, version: int, note: bytes | None, now_ms: int
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            row = conn.execute(_sql("metrics_alert_version"), {"key": key}).fetchone()
            if (row[0] if row is not None else 0) != version:
                return False
            conn.execute(
                _sql("metrics_alert_put"),
                {"key": key, "version": version + 1, "state": state, "now": now_ms},
            )
            if note is not None:
                conn.execute(_sql("metrics_alert_note"), {"now": now_ms, "note": note})
                conn.execute(_sql("metrics_alert_trim"), {"keep": ALERT_HISTORY})
            return True

        return await self._write(tx)

    async def alert_history(self, *, limit: int = 100) -> list[bytes]:
        def read(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(_sql("metrics_alert_history"), {"limit": limit})
            return [bytes(row[0]) for row in rows]

        return await self._run(read)

    async def counts_by_name(self, queue: str, *, limit: int = 10_000) -> NameCounts:
        # Bounded like Redis: a dashboard polls this, and a backlog of millions must
        # not turn each poll into a scan of all of them.
        def read(conn: sqlite3.Connection) -> NameCounts:
            counts: dict[str, dict[JobState, int]] = {}
            complete = True
            for state in NAME_STATES:
                args = {"queue": queue, "state": state.value, "limit": max(1, limit)}
                for name, count in conn.execute(_sql("metrics_counts_by_name"), args):
                    counts.setdefault(name, {})[state] = int(count)
                if conn.execute(_sql("metrics_state_over_limit"), args).fetchone()[0]:
                    complete = False
            return NameCounts(counts=counts, complete=complete)

        return await self._run(read)
