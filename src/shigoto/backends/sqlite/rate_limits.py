"""Rate limits and concurrency caps on SQLite (issue 11).

A mixin of :class:`~shigoto.backends.sqlite.backend.SqliteBackend` for the settings
(``set_limits`` / ``get_limits``) and the ``postpone`` transition, plus the function
the claim transaction calls to apply the limits (:func:`limited_claim`). Everything
runs inside the claim's ``BEGIN IMMEDIATE`` transaction, so processes sharing the file
serialize on the write lock and never see each other's half-counted windows.

The rate is a sliding log (``rate_log``): one row per claimed job, rows older than
the period deleted before counting, so "at most N per period" holds for every window,
not only for windows aligned to a clock.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import LeaseLost
from ...job import JobState
from ..contract import CONCURRENCY_POLL_MS, GROUP_SCAN, Lease, QueueLimits
from .wakeup import wakeups

T = TypeVar("T")
NO_GROUP = ""
"""Group of the queue's own window in ``rate_log`` (groups are never empty strings)."""


def _sql(name: str) -> str:
    # Imported late: backend.py imports this module to build SqliteBackend.
    from .backend import SQL

    return SQL[name]


class SqliteRateLimits:
    """The ``rate limits`` section of the contract for :class:`SqliteBackend`."""

    path: str
    _held_at: dict[str, float]
    _capped: set[str]
    _freed: asyncio.Event

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    def _slot_freed(self, queue: str) -> None:
        """A job of ``queue`` left ``active`` through this connection: wake the waits
        held by the queue's ``max_active`` at once instead of at their next poll."""
        if queue in self._capped:
            self._freed.set()

    def outlook(self, queues: Sequence[str]) -> tuple[list[str], float | None]:
        """:class:`~shigoto.backends.contract.LimitOutlook`. No due times: this backend's
        own waits poll every ``poll_interval_s`` for delayed jobs."""
        now = asyncio.get_running_loop().time()
        return [queue for queue in queues if self._held_at.get(queue, now) > now], None

    async def set_limits(self, queue: str, limits: QueueLimits) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(_sql("register_queue"), (queue,))
            conn.execute(
                _sql("limits_set"),
                {
                    "queue": queue,
                    "rate_max": limits.rate_max,
                    "rate_period_ms": limits.rate_period_ms,
                    "max_active": limits.max_active,
                    "group_rate_max": limits.group_rate_max,
                    "group_rate_period_ms": limits.group_rate_period_ms,
                },
            )

        await self._write(tx)

        wakeups.notify(self.path)  # a raised limit may let idle workers claim at once

    async def get_limits(self, queue: str, *, now_ms: int) -> QueueLimits:
        def read(conn: sqlite3.Connection) -> QueueLimits:
            settings = _Settings.load(conn, queue)
            return QueueLimits() if settings is None else settings.public(now_ms)

        return await self._run(read)

    async def postpone(self, lease: Lease, *, run_at_ms: int, hold: bool, now_ms: int) -> None:
        state = JobState.DELAYED if run_at_ms > now_ms else JobState.WAITING

        def tx(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                _sql("postpone"),
                {
                    "queue": lease.queue,
                    "id": lease.job_id,
                    "token": lease.token,
                    "state": state.value,
                    "now": now_ms,
                    "run_at": run_at_ms,
                },
            ).fetchone()
            if row is None:
                return False
            if hold and run_at_ms > now_ms:
                settings = _Settings.load(conn, lease.queue)
                grouped = settings is not None and settings.group_rate_max is not None
                if row[0] is not None and grouped:
                    params = {"queue": lease.queue, "grp": row[0], "until": run_at_ms}
                    conn.execute(_sql("limits_hold_group"), params)
                else:
                    params = {"queue": lease.queue, "until": run_at_ms}
                    conn.execute(_sql("limits_hold_queue"), params)
            return True

        if not await self._write(tx):
            raise LeaseLost(f"job {lease.job_id}: lease lost, postponement not recorded")
        self._slot_freed(lease.queue)
        if state is JobState.WAITING:
            wakeups.notify(self.path)


@dataclass(slots=True)
class _Settings:
    """One ``queue_limits`` row."""

    rate_max: int | None
    rate_period_ms: int | None
    max_active: int | None
    group_rate_max: int | None
    group_rate_period_ms: int | None
    held_until_ms: int | None
    last_group: str | None

    @classmethod
    def load(cls, conn: sqlite3.Connection, queue: str) -> _Settings | None:
        row = conn.execute(_sql("limits_get"), (queue,)).fetchone()
        return None if row is None else cls(*row)

    def public(self, now_ms: int) -> QueueLimits:
        held = self.held_until_ms
        return QueueLimits(
            rate_max=self.rate_max,
            rate_period_ms=self.rate_period_ms,
            max_active=self.max_active,
            group_rate_max=self.group_rate_max,
            group_rate_period_ms=self.group_rate_period_ms,
            held_until_ms=held if held is not None and held > now_ms else None,
        )


@dataclass(slots=True)
class Allowance:
    """What the limits let one claim take: ``count`` jobs, the picked ``seqs`` (group
    mode), and ``hold_until_ms``: when the next slot opens if a limit held it back."""

    count: int
    hold_until_ms: int | None = None
    capped: bool = False
    """Only max_active is in the way: a job finishing frees a slot at once."""
    room: int = 0
    """What the queue's own limits allowed (``count`` may be less in group mode)."""
    seqs: list[int] | None = None
    log_queue: bool = False
    """Claims count against the queue's window."""
    log_groups: bool = False
    """Claims of grouped jobs count against their group's window."""


def limited_claim(
    conn: sqlite3.Connection, queue: str, limit: int, now_ms: int
) -> Allowance | None:
    """Apply the queue's limits inside the claim transaction.

    None: the queue has no limits (claim the plain way). Otherwise how many jobs, or
    which ones (group mode), the claim may take; the caller claims them and then calls
    :func:`record_claims`.
    """
    settings = _Settings.load(conn, queue)
    if settings is None:
        return None
    if settings.held_until_ms is not None and settings.held_until_ms > now_ms:
        return Allowance(0, settings.held_until_ms)
    room = limit
    if settings.max_active is not None:
        active = conn.execute(_sql("limits_active"), (queue,)).fetchone()[0]
        room = min(room, settings.max_active - active)
    if settings.rate_max is not None and settings.rate_period_ms is not None:
        left, _ = _window_room(
            conn, queue, NO_GROUP, settings.rate_max, settings.rate_period_ms, now_ms
        )
        room = min(room, left)
    if room <= 0:
        hold, capped = _next_slot(conn, queue, settings, now_ms)
        return Allowance(0, hold, capped)
    log_queue = settings.rate_max is not None
    if settings.group_rate_max is None or settings.group_rate_period_ms is None:
        return Allowance(room, room=room, log_queue=log_queue)
    allowance = _pick_groups(conn, queue, settings, room, now_ms)
    allowance.room = room
    allowance.log_queue = log_queue
    allowance.log_groups = True
    return allowance


def finish_claim(
    conn: sqlite3.Connection,
    queue: str,
    allowance: Allowance,
    groups: Sequence[str | None],
    limit: int,
    now_ms: int,
) -> None:
    """After the claim: add the claimed jobs (their groups) to the sliding logs they
    count against, and when they used up what the limits allowed, say when the next
    slot opens (``allowance.hold_until_ms``)."""
    rows: list[tuple[str, str, int]] = []
    if allowance.log_queue:
        rows += [(queue, NO_GROUP, now_ms)] * len(groups)
    if allowance.log_groups:
        rows += [(queue, g, now_ms) for g in groups if g is not None]
    if rows:
        conn.executemany(_sql("limits_log"), rows)
    used_up = allowance.room < limit and len(groups) >= allowance.room
    if allowance.hold_until_ms is None and used_up:
        settings = _Settings.load(conn, queue)
        if settings is not None:
            allowance.hold_until_ms, allowance.capped = _next_slot(conn, queue, settings, now_ms)


def _next_slot(
    conn: sqlite3.Connection, queue: str, settings: _Settings, now_ms: int
) -> tuple[int | None, bool]:
    """When the queue's used-up limits open a slot again (None: they are not used up),
    and whether only max_active is in the way."""
    hold, rate_full = None, False
    if settings.rate_max is not None and settings.rate_period_ms is not None:
        left, slot = _window_room(
            conn, queue, NO_GROUP, settings.rate_max, settings.rate_period_ms, now_ms
        )
        if left <= 0:
            hold, rate_full = slot, True
    if settings.max_active is not None:
        active = conn.execute(_sql("limits_active"), (queue,)).fetchone()[0]
        if active >= settings.max_active:
            poll = now_ms + CONCURRENCY_POLL_MS
            return (poll if hold is None else max(hold, poll)), not rate_full
    return hold, False


def _window_room(
    conn: sqlite3.Connection, queue: str, group: str, count: int, period_ms: int, now_ms: int
) -> tuple[int, int]:
    """(claims left in the window ending now, when the next one frees up if none)."""
    params: dict[str, Any] = {"queue": queue, "grp": group, "before": now_ms - period_ms}
    conn.execute(_sql("limits_expire"), params)
    used = conn.execute(_sql("limits_used"), params).fetchone()[0]
    left = count - used
    if left > 0:
        return left, now_ms
    oldest = conn.execute(_sql("limits_nth_oldest"), {**params, "offset": used - count}).fetchone()
    return left, (now_ms if oldest is None else oldest[0]) + period_ms


def _pick_groups(
    conn: sqlite3.Connection, queue: str, settings: _Settings, room: int, now_ms: int
) -> Allowance:
    """Round-robin between the groups of the first GROUP_SCAN ready jobs."""
    assert settings.group_rate_max is not None and settings.group_rate_period_ms is not None
    lanes: dict[str, list[int]] = {}
    for seq, group in conn.execute(_sql("limits_scan"), {"queue": queue, "limit": GROUP_SCAN}):
        lanes.setdefault(NO_GROUP if group is None else group, []).append(seq)
    if not lanes:
        return Allowance(room, seqs=[])
    names = sorted(lanes)
    last = settings.last_group
    if last is not None:
        names = [g for g in names if g > last] + [g for g in names if g <= last]
    conn.execute(_sql("limits_forget_holds"), {"queue": queue, "now": now_ms})
    held = dict(
        conn.execute(
            _sql("limits_group_holds"),
            {"queue": queue, "now": now_ms, "groups": json.dumps(names)},
        ).fetchall()
    )
    conn.execute(
        _sql("limits_expire_groups"),
        {"queue": queue, "before": now_ms - settings.group_rate_period_ms},
    )
    rooms: dict[str, int] = {}
    for group in names:
        if group == NO_GROUP:
            rooms[group] = room
        elif group in held:
            rooms[group] = 0
            _park(conn, lanes[group], held[group])
        else:
            left, next_slot = _window_room(
                conn,
                queue,
                group,
                settings.group_rate_max,
                settings.group_rate_period_ms,
                now_ms,
            )
            rooms[group] = left
            if left <= 0:
                _park(conn, lanes[group], next_slot)
    picked: list[int] = []
    served: str | None = None
    progress = True
    while len(picked) < room and progress:
        progress = False
        for group in names:
            if len(picked) >= room:
                break
            if rooms[group] > 0 and lanes[group]:
                picked.append(lanes[group].pop(0))
                rooms[group] -= 1
                served = group
                progress = True
    if served is not None:
        conn.execute(_sql("limits_last_group"), {"queue": queue, "grp": served})
    return Allowance(len(picked), seqs=picked)


def _park(conn: sqlite3.Connection, seqs: list[int], until_ms: int) -> None:
    conn.execute(_sql("limits_park"), {"seqs": json.dumps(seqs), "until": until_ms})
    seqs.clear()
